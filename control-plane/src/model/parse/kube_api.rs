//! The fields of the Kubernetes kinds meshd reads (Namespace, Service, Pod,
//! EndpointSlice), as in the Kubernetes API (core/v1, discovery.k8s.io/v1, up to
//! 1.34). meshd reads only a few of them; the others are accepted without a word, as
//! they belong to the API. Parts written by the cluster itself (`status` other than a
//! Pod's, `managedFields`, probes, volumes, ...) are not checked field by field.

use super::schema::{leaf, read, Message, Shape};

use Shape::List;

const fn msg(m: &'static Message) -> Shape {
    Shape::Message(m)
}

pub(super) static OBJECT_META: Message = Message {
    fields: &[
        leaf("name"),
        leaf("generateName"),
        leaf("namespace"),
        leaf("selfLink"),
        leaf("uid"),
        leaf("resourceVersion"),
        leaf("generation"),
        leaf("creationTimestamp"),
        leaf("deletionTimestamp"),
        leaf("deletionGracePeriodSeconds"),
        leaf("labels"),
        leaf("annotations"),
        leaf("ownerReferences"),
        leaf("finalizers"),
        leaf("managedFields"),
        leaf("clusterName"),
    ],
};

/// Top level of Namespace, Service and Pod.
pub(super) static OBJECT: Message = Message {
    fields: &[leaf("apiVersion"), leaf("kind"), read("metadata", msg(&OBJECT_META)), leaf("spec"), leaf("status")],
};

/// A Secret (only `kubernetes.io/tls` ones are read, for Gateway certificates).
pub(super) static SECRET: Message = Message {
    fields: &[
        leaf("apiVersion"),
        leaf("kind"),
        read("metadata", msg(&OBJECT_META)),
        leaf("type"),
        leaf("data"),
        leaf("stringData"),
        leaf("immutable"),
    ],
};

pub(super) static SERVICE_SPEC: Message = Message {
    fields: &[
        read("ports", List(&SERVICE_PORT)),
        leaf("selector"),
        leaf("clusterIP"),
        leaf("clusterIPs"),
        leaf("type"),
        leaf("externalIPs"),
        leaf("sessionAffinity"),
        leaf("loadBalancerIP"),
        leaf("loadBalancerSourceRanges"),
        leaf("externalName"),
        leaf("externalTrafficPolicy"),
        leaf("healthCheckNodePort"),
        leaf("publishNotReadyAddresses"),
        leaf("sessionAffinityConfig"),
        leaf("ipFamilies"),
        leaf("ipFamilyPolicy"),
        leaf("allocateLoadBalancerNodePorts"),
        leaf("loadBalancerClass"),
        leaf("internalTrafficPolicy"),
        leaf("trafficDistribution"),
    ],
};

static SERVICE_PORT: Message = Message {
    fields: &[leaf("name"), leaf("protocol"), leaf("appProtocol"), leaf("port"), leaf("targetPort"), leaf("nodePort")],
};

pub(super) static POD_SPEC: Message = Message {
    fields: &[
        leaf("volumes"),
        leaf("initContainers"),
        read("containers", List(&CONTAINER)),
        leaf("ephemeralContainers"),
        leaf("restartPolicy"),
        leaf("terminationGracePeriodSeconds"),
        leaf("activeDeadlineSeconds"),
        leaf("dnsPolicy"),
        leaf("nodeSelector"),
        leaf("serviceAccountName"),
        leaf("serviceAccount"),
        leaf("automountServiceAccountToken"),
        leaf("nodeName"),
        leaf("hostNetwork"),
        leaf("hostPID"),
        leaf("hostIPC"),
        leaf("shareProcessNamespace"),
        leaf("securityContext"),
        leaf("imagePullSecrets"),
        leaf("hostname"),
        leaf("hostnameOverride"),
        leaf("subdomain"),
        leaf("affinity"),
        leaf("schedulerName"),
        leaf("tolerations"),
        leaf("hostAliases"),
        leaf("priorityClassName"),
        leaf("priority"),
        leaf("dnsConfig"),
        leaf("readinessGates"),
        leaf("runtimeClassName"),
        leaf("enableServiceLinks"),
        leaf("preemptionPolicy"),
        leaf("overhead"),
        leaf("topologySpreadConstraints"),
        leaf("setHostnameAsFQDN"),
        leaf("os"),
        leaf("hostUsers"),
        leaf("schedulingGates"),
        leaf("resourceClaims"),
        leaf("resources"),
    ],
};

static CONTAINER: Message = Message {
    fields: &[
        leaf("name"),
        leaf("image"),
        leaf("command"),
        leaf("args"),
        leaf("workingDir"),
        read("ports", List(&CONTAINER_PORT)),
        leaf("envFrom"),
        leaf("env"),
        leaf("resources"),
        leaf("resizePolicy"),
        leaf("restartPolicy"),
        leaf("restartPolicyRules"),
        leaf("volumeMounts"),
        leaf("volumeDevices"),
        leaf("livenessProbe"),
        leaf("readinessProbe"),
        leaf("startupProbe"),
        leaf("lifecycle"),
        leaf("terminationMessagePath"),
        leaf("terminationMessagePolicy"),
        leaf("imagePullPolicy"),
        leaf("securityContext"),
        leaf("stdin"),
        leaf("stdinOnce"),
        leaf("tty"),
    ],
};

static CONTAINER_PORT: Message =
    Message { fields: &[leaf("containerPort"), leaf("hostPort"), leaf("hostIP"), leaf("name"), leaf("protocol")] };

pub(super) static ENDPOINT_SLICE: Message = Message {
    fields: &[
        leaf("apiVersion"),
        leaf("kind"),
        read("metadata", msg(&OBJECT_META)),
        leaf("addressType"),
        read("endpoints", List(&ENDPOINT)),
        read("ports", List(&ENDPOINT_PORT)),
    ],
};

static ENDPOINT: Message = Message {
    fields: &[
        leaf("addresses"),
        read("conditions", msg(&ENDPOINT_CONDITIONS)),
        leaf("hostname"),
        read("targetRef", msg(&OBJECT_REFERENCE)),
        leaf("nodeName"),
        leaf("zone"),
        leaf("hints"),
        leaf("deprecatedTopology"),
    ],
};

static ENDPOINT_CONDITIONS: Message = Message { fields: &[leaf("ready"), leaf("serving"), leaf("terminating")] };

static OBJECT_REFERENCE: Message = Message {
    fields: &[
        leaf("kind"),
        leaf("namespace"),
        leaf("name"),
        leaf("uid"),
        leaf("apiVersion"),
        leaf("resourceVersion"),
        leaf("fieldPath"),
    ],
};

static ENDPOINT_PORT: Message =
    Message { fields: &[leaf("name"), leaf("protocol"), leaf("port"), leaf("appProtocol")] };
