//! The fields of Istio's networking API (networking.istio.io v1: VirtualService,
//! DestinationRule, Gateway, ServiceEntry), and what meshd does with each.
//!
//! Decisions for fields meshd does not implement yet (see [`super::schema`]):
//! ignoring is a warning when the field only shapes how traffic that already goes to
//! a destination is handled (connection pools, outlier detection, upstream TLS,
//! hashing, statistics). It is an error when ignoring would change which requests a
//! rule takes or where they go: match conditions meshd cannot evaluate (JWT claims;
//! source conditions of `tcp` and `tls` matches) and `tunnel` (traffic would bypass
//! the tunnel).

use super::schema::{ignored, leaf, read, unsupported, Message, Shape};

use Shape::{Leaf, List, Map};

const fn msg(m: &'static Message) -> Shape {
    Shape::Message(m)
}

/// Fields every Istio object has at the top level (`spec` is checked by kind).
pub(super) static OBJECT: Message = Message {
    fields: &[
        leaf("apiVersion"),
        leaf("kind"),
        read("metadata", msg(&super::kube_api::OBJECT_META)),
        leaf("spec"),
        leaf("status"),
    ],
};

// ---- VirtualService ----------------------------------------------------------------

pub(super) static VIRTUAL_SERVICE: Message = Message {
    fields: &[
        leaf("hosts"),
        leaf("gateways"),
        read("http", List(&HTTP_ROUTE)),
        read("tls", List(&TLS_ROUTE)),
        read("tcp", List(&TCP_ROUTE)),
        leaf("exportTo"),
    ],
};

static HTTP_ROUTE: Message = Message {
    fields: &[
        leaf("name"),
        read("match", List(&HTTP_MATCH)),
        read("route", List(&HTTP_ROUTE_DESTINATION)),
        read("redirect", msg(&HTTP_REDIRECT)),
        read("directResponse", msg(&HTTP_DIRECT_RESPONSE)),
        read("delegate", msg(&DELEGATE)),
        read("rewrite", msg(&HTTP_REWRITE)),
        leaf("timeout"),
        read("retries", msg(&HTTP_RETRY)),
        read("fault", msg(&HTTP_FAULT)),
        read("mirror", msg(&DESTINATION)),
        read("mirrors", List(&HTTP_MIRROR_POLICY)),
        // The deprecated `mirror_percent` keeps its proto name in the CRD schema.
        leaf("mirror_percent"),
        leaf("mirrorPercent"),
        read("mirrorPercentage", msg(&PERCENT)),
        read("corsPolicy", msg(&CORS_POLICY)),
        read("headers", msg(&HEADERS)),
        // Istio's old field, still in its samples: websockets always work.
        leaf("websocketUpgrade"),
    ],
};

pub(super) static HTTP_MATCH: Message = Message {
    fields: &[
        leaf("name"),
        read("uri", msg(&STRING_MATCH)),
        read("scheme", msg(&STRING_MATCH)),
        read("method", msg(&STRING_MATCH)),
        read("authority", msg(&STRING_MATCH)),
        read("headers", Map(&STRING_MATCH)),
        leaf("port"),
        leaf("sourceLabels"),
        leaf("gateways"),
        read("queryParams", Map(&STRING_MATCH)),
        leaf("ignoreUriCase"),
        read("withoutHeaders", Map(&STRING_MATCH)),
        leaf("sourceNamespace"),
        ignored("statPrefix", Leaf, "statistics are not split by it"),
    ],
};

static STRING_MATCH: Message = Message { fields: &[leaf("exact"), leaf("prefix"), leaf("regex")] };

static HTTP_ROUTE_DESTINATION: Message =
    Message { fields: &[read("destination", msg(&DESTINATION)), leaf("weight"), read("headers", msg(&HEADERS))] };

static DESTINATION: Message = Message { fields: &[leaf("host"), leaf("subset"), read("port", msg(&PORT_SELECTOR))] };

pub(super) static PORT_SELECTOR: Message = Message { fields: &[leaf("number")] };

static HEADERS: Message =
    Message { fields: &[read("request", msg(&HEADER_OPERATIONS)), read("response", msg(&HEADER_OPERATIONS))] };

static HEADER_OPERATIONS: Message = Message { fields: &[leaf("set"), leaf("add"), leaf("remove")] };

static HTTP_REDIRECT: Message = Message {
    fields: &[
        leaf("uri"),
        leaf("prefixRewrite"),
        leaf("authority"),
        leaf("port"),
        leaf("derivePort"),
        leaf("scheme"),
        leaf("redirectCode"),
    ],
};

static HTTP_DIRECT_RESPONSE: Message = Message { fields: &[leaf("status"), read("body", msg(&HTTP_BODY))] };

static HTTP_BODY: Message = Message { fields: &[leaf("string"), leaf("bytes")] };

static DELEGATE: Message = Message { fields: &[leaf("name"), leaf("namespace")] };

static HTTP_REWRITE: Message =
    Message { fields: &[leaf("uri"), leaf("authority"), read("uriRegexRewrite", msg(&REGEX_REWRITE))] };

static REGEX_REWRITE: Message = Message { fields: &[leaf("match"), leaf("rewrite")] };

static HTTP_RETRY: Message = Message {
    fields: &[
        leaf("attempts"),
        leaf("perTryTimeout"),
        leaf("retryOn"),
        leaf("retryRemoteLocalities"),
        leaf("retryIgnorePreviousHosts"),
        leaf("backoff"),
    ],
};

static HTTP_FAULT: Message = Message { fields: &[read("delay", msg(&FAULT_DELAY)), read("abort", msg(&FAULT_ABORT))] };

static FAULT_DELAY: Message = Message {
    fields: &[leaf("fixedDelay"), leaf("exponentialDelay"), leaf("percent"), read("percentage", msg(&PERCENT))],
};

static FAULT_ABORT: Message = Message {
    fields: &[leaf("httpStatus"), leaf("grpcStatus"), leaf("http2Error"), read("percentage", msg(&PERCENT))],
};

static PERCENT: Message = Message { fields: &[leaf("value")] };

static HTTP_MIRROR_POLICY: Message =
    Message { fields: &[read("destination", msg(&DESTINATION)), read("percentage", msg(&PERCENT))] };

static CORS_POLICY: Message = Message {
    fields: &[
        leaf("allowOrigin"),
        read("allowOrigins", List(&STRING_MATCH)),
        leaf("allowMethods"),
        leaf("allowHeaders"),
        leaf("exposeHeaders"),
        leaf("maxAge"),
        leaf("allowCredentials"),
        leaf("unmatchedPreflights"),
    ],
};

/// Source conditions of tcp/tls matches: the capture listeners are shared by every
/// capture proxy, so a match on the client would need listeners per proxy class.
const FROM_EVERY_WORKLOAD: &str = "would match connections from every workload (it needs listeners per client \
    workload; the capture listeners are shared by all workloads today)";
const FROM_EVERY_NAMESPACE: &str = "would match connections from every namespace (it needs listeners per client \
    namespace; the capture listeners are shared by all workloads today)";

static TLS_ROUTE: Message =
    Message { fields: &[read("match", List(&TLS_MATCH)), read("route", List(&ROUTE_DESTINATION))] };

static TLS_MATCH: Message = Message {
    fields: &[
        leaf("sniHosts"),
        leaf("destinationSubnets"),
        leaf("port"),
        unsupported("sourceLabels", Leaf, FROM_EVERY_WORKLOAD),
        leaf("gateways"),
        unsupported("sourceNamespace", Leaf, FROM_EVERY_NAMESPACE),
    ],
};

static TCP_ROUTE: Message =
    Message { fields: &[read("match", List(&L4_MATCH)), read("route", List(&ROUTE_DESTINATION))] };

static L4_MATCH: Message = Message {
    fields: &[
        leaf("destinationSubnets"),
        leaf("port"),
        ignored("sourceSubnet", Leaf, "Istio does not evaluate it either; connections from every source match"),
        unsupported("sourceLabels", Leaf, FROM_EVERY_WORKLOAD),
        leaf("gateways"),
        unsupported("sourceNamespace", Leaf, FROM_EVERY_NAMESPACE),
    ],
};

static ROUTE_DESTINATION: Message = Message { fields: &[read("destination", msg(&DESTINATION)), leaf("weight")] };

// ---- DestinationRule ---------------------------------------------------------------

pub(super) static DESTINATION_RULE: Message = Message {
    fields: &[
        leaf("host"),
        read("trafficPolicy", msg(&TRAFFIC_POLICY)),
        read("subsets", List(&SUBSET)),
        leaf("exportTo"),
        read("workloadSelector", msg(&WORKLOAD_SELECTOR)),
    ],
};

static WORKLOAD_SELECTOR: Message = Message { fields: &[leaf("matchLabels")] };

const BALANCING: &str = "connections use meshd's defaults";
const NEEDS_SDS: &str = "needs certificates from Kubernetes secrets (SDS), which meshd does not serve yet; \
    name files on the proxy with caCertificates, clientCertificate and privateKey";

static TRAFFIC_POLICY: Message = Message {
    fields: &[
        read("loadBalancer", msg(&LOAD_BALANCER)),
        read("connectionPool", msg(&CONNECTION_POOL)),
        read("outlierDetection", msg(&OUTLIER_DETECTION)),
        read("tls", msg(&CLIENT_TLS)),
        read("portLevelSettings", List(&PORT_TRAFFIC_POLICY)),
        unsupported("tunnel", msg(&TUNNEL), "would connect straight to the destination instead of through the tunnel"),
        ignored("proxyProtocol", msg(&PROXY_PROTOCOL), "no PROXY protocol header is sent"),
        ignored("retryBudget", msg(&RETRY_BUDGET), BALANCING),
    ],
};

static PORT_TRAFFIC_POLICY: Message = Message {
    fields: &[
        read("port", msg(&PORT_SELECTOR)),
        read("loadBalancer", msg(&LOAD_BALANCER)),
        read("connectionPool", msg(&CONNECTION_POOL)),
        read("outlierDetection", msg(&OUTLIER_DETECTION)),
        read("tls", msg(&CLIENT_TLS)),
    ],
};

static LOAD_BALANCER: Message = Message {
    fields: &[
        leaf("simple"),
        read("consistentHash", msg(&CONSISTENT_HASH)),
        read("localityLbSetting", msg(&LOCALITY_LB)),
        leaf("warmupDurationSecs"),
        read("warmup", msg(&WARMUP)),
        ignored("backendUtilization", msg(&BACKEND_UTILIZATION), "requests are balanced by the simple policy"),
        ignored("zoneAwareLbSetting", msg(&ZONE_AWARE_LB), "endpoints are balanced without regard to zones"),
    ],
};

static BACKEND_UTILIZATION: Message = Message {
    fields: &[
        leaf("weightStabilizationPeriod"),
        leaf("weightExpirationPeriod"),
        leaf("weightUpdatePeriod"),
        leaf("errorUtilizationPenaltyPercent"),
        leaf("metricNamesForComputingUtilization"),
    ],
};

static ZONE_AWARE_LB: Message = Message {
    fields: &[
        leaf("enabled"),
        read("failover", List(&LOCALITY_FROM_TO)),
        leaf("failoverPriority"),
        leaf("minClusterSize"),
    ],
};

static CONSISTENT_HASH: Message = Message {
    fields: &[
        leaf("httpHeaderName"),
        read("httpCookie", msg(&HTTP_COOKIE)),
        leaf("useSourceIp"),
        leaf("httpQueryParameterName"),
        read("ringHash", msg(&RING_HASH)),
        read("maglev", msg(&MAGLEV)),
        leaf("minimumRingSize"),
    ],
};

static HTTP_COOKIE: Message = Message {
    fields: &[
        leaf("name"),
        leaf("path"),
        leaf("ttl"),
        ignored("attributes", List(&COOKIE_ATTRIBUTE), NO_COOKIE_ATTRIBUTES),
    ],
};
const NO_COOKIE_ATTRIBUTES: &str = "the generated cookie carries only its name, path and TTL";
static COOKIE_ATTRIBUTE: Message = Message { fields: &[leaf("name"), leaf("value")] };
static RING_HASH: Message = Message { fields: &[leaf("minimumRingSize")] };
static MAGLEV: Message = Message { fields: &[leaf("tableSize")] };

static LOCALITY_LB: Message = Message {
    fields: &[
        read("distribute", List(&LOCALITY_FROM_TO)),
        read("failover", List(&LOCALITY_FROM_TO)),
        unsupported(
            "failoverPriority",
            Leaf,
            "would order endpoints by the labels they share with each caller, which needs endpoints per caller \
             workload; meshd orders them by locality only (failover)",
        ),
        leaf("enabled"),
    ],
};

static LOCALITY_FROM_TO: Message = Message { fields: &[leaf("from"), leaf("to")] };
static WARMUP: Message = Message { fields: &[leaf("duration"), leaf("minimumPercent"), leaf("aggression")] };

static CONNECTION_POOL: Message = Message { fields: &[read("tcp", msg(&TCP_POOL)), read("http", msg(&HTTP_POOL))] };

static TCP_POOL: Message = Message {
    fields: &[
        leaf("maxConnections"),
        leaf("connectTimeout"),
        read("tcpKeepalive", msg(&TCP_KEEPALIVE)),
        ignored("maxConnectionDuration", Leaf, "connections are not closed for their age"),
        ignored("idleTimeout", Leaf, "idle TCP connections are closed after Envoy's default (1h for TCP proxying)"),
    ],
};

static TCP_KEEPALIVE: Message = Message { fields: &[leaf("probes"), leaf("time"), leaf("interval")] };

static HTTP_POOL: Message = Message {
    fields: &[
        leaf("http1MaxPendingRequests"),
        leaf("http2MaxRequests"),
        leaf("maxRequestsPerConnection"),
        leaf("maxRetries"),
        leaf("idleTimeout"),
        ignored("h2UpgradePolicy", Leaf, "HTTP/1.1 connections are not upgraded to HTTP/2"),
        ignored("useClientProtocol", Leaf, "the upstream protocol follows the service port's protocol"),
        ignored("maxConcurrentStreams", Leaf, "Envoy's default HTTP/2 stream limit applies"),
        ignored("http2KeepAlive", msg(&HTTP2_KEEPALIVE), "no HTTP/2 PING keepalive is sent"),
    ],
};

static HTTP2_KEEPALIVE: Message = Message { fields: &[leaf("interval"), leaf("timeout")] };

const LOCAL_ORIGIN: &str = "connection failures count as 5xx errors (Envoy's default)";

static OUTLIER_DETECTION: Message = Message {
    fields: &[
        ignored("splitExternalLocalOriginErrors", Leaf, LOCAL_ORIGIN),
        ignored("consecutiveLocalOriginFailures", Leaf, LOCAL_ORIGIN),
        leaf("consecutiveGatewayErrors"),
        leaf("consecutive5xxErrors"),
        ignored("consecutiveErrors", Leaf, "deprecated in Istio; use consecutive5xxErrors"),
        leaf("interval"),
        leaf("baseEjectionTime"),
        leaf("maxEjectionPercent"),
        leaf("minHealthPercent"),
        ignored("failurePercentageThreshold", Leaf, "hosts are not ejected by failure percentage"),
        ignored("outlierDetectionHttpErrorCodes", Leaf, "5xx answers count as errors, other codes do not"),
    ],
};

static CLIENT_TLS: Message = Message {
    fields: &[
        leaf("mode"),
        leaf("clientCertificate"),
        leaf("privateKey"),
        leaf("caCertificates"),
        unsupported("credentialName", Leaf, NEEDS_SDS),
        unsupported("caCertCredentialName", Leaf, NEEDS_SDS),
        leaf("subjectAltNames"),
        leaf("sni"),
        leaf("insecureSkipVerify"),
        ignored("caCrl", Leaf, "revoked certificates are accepted"),
    ],
};

static TUNNEL: Message = Message { fields: &[leaf("protocol"), leaf("targetHost"), leaf("targetPort")] };
static PROXY_PROTOCOL: Message = Message { fields: &[leaf("version")] };
static RETRY_BUDGET: Message =
    Message { fields: &[leaf("percent"), leaf("minRetryConcurrency"), leaf("budgetInterval")] };

static SUBSET: Message =
    Message { fields: &[leaf("name"), leaf("labels"), read("trafficPolicy", msg(&TRAFFIC_POLICY))] };

// ---- Gateway -----------------------------------------------------------------------

pub(super) static GATEWAY: Message = Message { fields: &[read("servers", List(&SERVER)), leaf("selector")] };

static SERVER: Message = Message {
    fields: &[
        read("port", msg(&SERVER_PORT)),
        leaf("bind"),
        leaf("hosts"),
        read("tls", msg(&SERVER_TLS)),
        ignored("defaultEndpoint", Leaf, "applies to sidecars' Sidecar resources, not to gateway servers"),
        leaf("name"),
    ],
};

pub(super) static SERVER_PORT: Message =
    Message { fields: &[leaf("number"), leaf("protocol"), leaf("name"), leaf("targetPort")] };

static SERVER_TLS: Message = Message {
    fields: &[
        leaf("httpsRedirect"),
        leaf("mode"),
        leaf("serverCertificate"),
        leaf("privateKey"),
        leaf("caCertificates"),
        unsupported("caCrl", Leaf, CLIENT_CHECK),
        leaf("credentialName"),
        leaf("credentialNames"),
        unsupported(
            "tlsCertificates",
            List(&TLS_CERTIFICATE),
            "would serve no certificate; use credentialName(s) or serverCertificate",
        ),
        unsupported("subjectAltNames", Leaf, CLIENT_CHECK),
        unsupported("verifyCertificateSpki", Leaf, CLIENT_CHECK),
        unsupported("verifyCertificateHash", Leaf, CLIENT_CHECK),
        leaf("minProtocolVersion"),
        leaf("maxProtocolVersion"),
        unsupported("cipherSuites", Leaf, "would accept Envoy's default cipher suites, not only those listed"),
        unsupported(
            "caCertCredentialName",
            Leaf,
            "would accept client certificates without this CA; put ca.crt in the credentialName Secret",
        ),
        ignored("alpnProtocols", Leaf, "gateway servers offer h2 and http/1.1"),
        ignored("ecdhCurves", Leaf, "Envoy's default curves are used"),
        ignored("insecureSkipVerify", Leaf, "a gateway server does not verify a server certificate"),
    ],
};

/// Why a field that narrows which client certificates a MUTUAL server accepts is refused.
const CLIENT_CHECK: &str = "would accept client certificates this field rejects";

static TLS_CERTIFICATE: Message =
    Message { fields: &[leaf("serverCertificate"), leaf("privateKey"), leaf("caCertificates")] };

// ---- ServiceEntry ------------------------------------------------------------------

pub(super) static SERVICE_ENTRY: Message = Message {
    fields: &[
        leaf("hosts"),
        leaf("addresses"),
        read("ports", List(&SERVER_PORT)),
        leaf("location"),
        leaf("resolution"),
        read("endpoints", List(&WORKLOAD_ENTRY)),
        read("workloadSelector", msg(&ENTRY_WORKLOAD_SELECTOR)),
        leaf("exportTo"),
        ignored("subjectAltNames", Leaf, "peer certificates are not checked against them (no mesh mTLS yet)"),
    ],
};

/// A ServiceEntry's selector (`labels`, unlike the DestinationRule's `matchLabels`).
static ENTRY_WORKLOAD_SELECTOR: Message = Message { fields: &[leaf("labels")] };

static WORKLOAD_ENTRY: Message = Message {
    fields: &[
        leaf("address"),
        leaf("ports"),
        leaf("labels"),
        ignored("network", Leaf, "endpoints on every network are used alike"),
        leaf("locality"),
        leaf("weight"),
        ignored("serviceAccount", Leaf, "the endpoint's identity is not checked (no mesh mTLS yet)"),
    ],
};

/// The `spec` of each networking kind meshd reads, under the object's top level.
pub(super) fn spec_of(kind: &str) -> Option<&'static Message> {
    Some(match kind {
        "VirtualService" => &VIRTUAL_SERVICE,
        "DestinationRule" => &DESTINATION_RULE,
        "Gateway" => &GATEWAY,
        "ServiceEntry" => &SERVICE_ENTRY,
        "Telemetry" => &super::telemetry::TELEMETRY,
        _ => return None,
    })
}
