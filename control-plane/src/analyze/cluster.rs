//! Reading a cluster for [`super::analyze_listed`]: one list of each routing kind whose
//! CRD is installed (in `networking.amime.dev` and `networking.istio.io`, at the version
//! meshd would watch) and of Namespaces and Services. The I/O edge; the analysis is pure.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;

use crate::model::Kind;
use crate::source::kube::api_resource;
use crate::source::kube::crd::{crd_names, served};
use crate::source::kube::feed::{FeedId, Group};
use crate::source::kube::watch::to_json;

use super::Listed;

/// Why a cluster could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {what}: {source}")]
pub struct ListError {
    what: String,
    source: kube::Error,
}

/// Lists what meshd reads of the routing configuration: Namespaces, Services and the
/// routing kinds of both groups (a kind whose CRD is absent is skipped, as meshd does).
pub async fn list_cluster(client: &Client) -> Result<Vec<Listed>, ListError> {
    let mut out = Vec::new();
    for (kind, plural) in [(Kind::Namespace, "namespaces"), (Kind::Service, "services")] {
        let feed = FeedId::new(kind, Group::Core);
        out.push(list(client, feed, "v1", plural).await?);
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, feed) in crd_names() {
        let crd = crds.get_opt(&name).await.map_err(|source| ListError { what: format!("CRD {name}"), source })?;
        let Some(crd) = crd else { continue };
        let Some(served) = serde_json::to_value(&crd).ok().and_then(|v| served(feed, &v)) else { continue };
        out.push(list(client, feed, &served.version, &served.plural).await?);
    }
    Ok(out)
}

async fn list(client: &Client, feed: FeedId, version: &str, plural: &str) -> Result<Listed, ListError> {
    let resource: ApiResource = api_resource(feed, version, plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(|source| ListError { what: format!("{} ({})", plural, resource.api_version), source })?;
    Ok(Listed {
        feed,
        version: version.to_owned(),
        plural: plural.to_owned(),
        objects: items.items.into_iter().map(|o| to_json(o, &resource)).collect(),
    })
}
