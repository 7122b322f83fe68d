//! The CRDs generated from control-plane/src/crd/ against a real kube-apiserver: every
//! one is Established (Amime's group and the Istio-group stand-in), Istio's YAML is
//! accepted under both groups, schema-invalid objects are rejected at `kubectl apply`
//! naming the field, and `kubectl explain` prints the field descriptions.

use amime_e2e::kube::KubeCluster;
use amime_e2e::paths::workspace_root;
use amime_e2e::{run_test, IpBlock};
use anyhow::{ensure, Context as _, Result};

const KINDS: [&str; 4] = ["VirtualService", "DestinationRule", "Gateway", "ServiceEntry"];
const PLURALS: [&str; 4] = ["virtualservices", "destinationrules", "gateways", "serviceentries"];

fn read(relative: &str) -> Result<String> {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

fn field<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    doc.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// The networking objects of the Istio samples the parser tests use (both the accepted
/// and the unsupported ones: the API server must take them all), with `apiVersion` set to
/// `api_version`.
fn istio_samples(api_version: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for dir in ["istio-accepted", "istio-unsupported"] {
        let dir = workspace_root().join("control-plane/tests/fixtures").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for doc in text.split("\n---") {
                let networking = field(doc, "apiVersion:").is_some_and(|v| v.starts_with("networking.istio.io/"));
                if networking && field(doc, "kind:").is_some_and(|k| KINDS.contains(&k)) {
                    let doc = doc.lines().map(|l| {
                        if l.starts_with("apiVersion:") {
                            format!("apiVersion: {api_version}")
                        } else {
                            l.to_owned()
                        }
                    });
                    out.push(doc.collect::<Vec<_>>().join("\n") + "\n");
                }
            }
        }
    }
    Ok(out)
}

/// `kubectl apply` of `yaml` must fail, and its error must say every one of `wanted`.
async fn rejected(cluster: &KubeCluster, yaml: &str, wanted: &[&str]) -> Result<String> {
    let error = match cluster.apply(yaml).await {
        Ok(out) => anyhow::bail!("accepted: {}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => format!("{e:#}"),
    };
    for want in wanted {
        ensure!(error.contains(want), "the rejection does not say {want:?}: {error}");
    }
    let said = error.lines().find(|l| l.contains("stderr:")).unwrap_or(&error).to_owned();
    println!("rejected: {said}");
    Ok(error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_accepts_the_crds_and_validates_objects_by_them() {
    run_test("crds-api-server", |ctx| async move {
        let cluster = KubeCluster::start(&ctx, IpBlock(171)).await?;
        cluster.apply(&read("manifests/crds/networking.amime.dev.yaml")?).await?;
        cluster.apply(&read("tests/fixtures/istio-networking-crds.yaml")?).await?;
        for group in ["networking.amime.dev", "networking.istio.io"] {
            for plural in PLURALS {
                let crd = format!("crd/{plural}.{group}");
                cluster.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", &crd]).await?;
            }
        }

        // The example rules (written as for Istio, apiVersion changed) and every
        // networking object of the Istio samples, under both groups.
        for ns in ["bookinfo", "shop", "prod", "sample", "istio-system"] {
            cluster.create_namespace(ns).await?;
        }
        cluster.apply(&read("manifests/examples/bookinfo/reviews-rules.yaml")?).await?;
        let got = cluster.kubectl(&["get", "amime", "-n", "bookinfo", "-o", "name"]).await?;
        let got = String::from_utf8_lossy(&got.stdout).into_owned();
        ensure!(got.contains("virtualservice.networking.amime.dev/reviews"), "{got}");
        ensure!(got.contains("destinationrule.networking.amime.dev/reviews"), "{got}");
        for api_version in ["networking.amime.dev/v1", "networking.istio.io/v1", "networking.istio.io/v1alpha3"] {
            let samples = istio_samples(api_version)?;
            ensure!(samples.len() >= 30, "only {} samples", samples.len());
            let out = cluster.apply(&samples.join("---\n")).await?;
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            println!("{api_version}: {} Istio sample objects accepted", out.lines().count());
            ensure!(out.lines().count() == samples.len(), "{out}");
        }

        // Schema-invalid objects are rejected by the API server, naming the field.
        let vs = |name: &str, http: &str| {
            format!(
                "apiVersion: networking.amime.dev/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: bookinfo}}\n\
                 spec:\n  hosts: [reviews]\n  http:\n{http}"
            )
        };
        let wrong_type = vs("wrong-type", "  - route:\n    - destination: {host: reviews}\n      weight: fifty\n");
        rejected(&cluster, &wrong_type, &["spec.http[0].route[0].weight", "must be of type integer"]).await?;
        let unknown = vs("unknown-field", "  - rout:\n    - destination: {host: reviews}\n");
        rejected(&cluster, &unknown, &["unknown field \"spec.http[0].rout\""]).await?;
        let two_matches = vs(
            "two-matches",
            "  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: reviews}\n",
        );
        rejected(&cluster, &two_matches, &["spec.http[0].match[0].uri", "oneOf"]).await?;
        let bad_enum = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad-enum, namespace: bookinfo}\n\
                        spec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBINN}}\n";
        rejected(&cluster, bad_enum, &["spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBIN"]).await?;
        // Fields Istio's CRDs require are required here too.
        let no_hosts = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: no-hosts, namespace: bookinfo}\n\
                        spec:\n  hosts: []\n  ports: [{number: 443, name: tls}]\n";
        rejected(&cluster, no_hosts, &["spec.hosts"]).await?;
        let unnamed_port = "apiVersion: networking.amime.dev/v1\nkind: Gateway\nmetadata: {name: unnamed-port, namespace: bookinfo}\n\
                            spec:\n  servers:\n  - port: {number: 80, protocol: HTTP}\n    hosts: ['*']\n";
        rejected(&cluster, unnamed_port, &["spec.servers[0].port.name", "Required value"]).await?;

        // `kubectl explain` prints the doc comments of the types.
        let explain = cluster
            .kubectl(&["explain", "virtualservice.spec.http.route", "--api-version", "networking.amime.dev/v1"])
            .await?;
        let explain = String::from_utf8_lossy(&explain.stdout).into_owned();
        println!("{explain}");
        for want in ["Destinations, with weights", "destination\t<Object> -required-", "weight\t<integer>", "Relative share"] {
            ensure!(explain.contains(want), "kubectl explain does not say {want:?}:\n{explain}");
        }
        Ok(())
    })
    .await;
}
