//! `meshctl install`: prints the CRDs and the install manifests for `kubectl apply -f -`.
//! The rendering (with the namespace and images overridden) is `control_plane::install`.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use control_plane::install::{render, InstallError, InstallOptions, DEFAULT_NAMESPACE};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(after_help = "Prints the CRDs (networking.amime.dev) and meshd's install manifests (namespace, \
ServiceAccount, RBAC, Deployment, PodDisruptionBudget, Service, injection webhook), in the order to apply them. \
With the defaults the output is manifests/crds/ and manifests/install/ as committed.\n\n\
Examples:\n  meshctl install | kubectl apply -f -\n  \
meshctl install --namespace mesh --image registry.example.com/meshd:dev | kubectl apply -f -\n  \
meshctl install --crds-only | kubectl apply -f -")]
pub struct InstallArgs {
    /// Only the CRDs (VirtualService, DestinationRule, Gateway, ServiceEntry, RateLimit).
    #[arg(long)]
    crds_only: bool,

    /// The namespace meshd runs in: its objects, and every reference to them (RBAC subjects, the
    /// webhook's Service, the address sidecars get), move there.
    #[arg(short = 'n', long = "namespace", value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    namespace: String,

    /// meshd's container image (default: the one in manifests/install/40-deployment.yaml).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,

    /// The sidecar image meshd injects into pods (meshd's --proxy-image).
    #[arg(long, value_name = "IMAGE")]
    proxy_image: Option<String>,
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let options = InstallOptions {
        crds_only: args.crds_only,
        namespace: args.namespace,
        image: args.image,
        proxy_image: args.proxy_image,
    };
    let text = render(&options).map_err(|e| match e {
        InstallError::Namespace(_) | InstallError::Empty { .. } => anyhow::Error::new(UsageError(e.to_string())),
        InstallError::Manifest { .. } => e.into(),
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).context("cannot write to standard output")
}
