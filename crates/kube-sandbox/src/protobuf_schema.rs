//! The protobuf schema table: for each message the sandbox decodes, its fields as
//! (field number, JSON name, type, cardinality), taken from k8s.io/api's generated.proto.
//! Only the kinds and nested types kubectl's typed `create` commands write are listed;
//! adding a kind is adding rows.

/// Field types.
#[derive(Clone, Copy)]
pub enum T {
    Str,
    Int,
    Bool,
    Msg(&'static str),
    /// An embedded Go struct whose fields appear inline in JSON.
    Inline(&'static str),
    MapStr,
    MapQty,
    MapBytes,
    Time,
    IntOrStr,
    Qty,
}

/// Cardinality.
#[derive(Clone, Copy, PartialEq)]
pub enum C {
    One,
    Ptr,
    Rep,
}

use C::*;
use T::*;

pub type Fields = &'static [(u32, &'static str, T, C)];

#[rustfmt::skip]
pub const SCHEMA: &[(&str, Fields)] = &[
    ("ObjectMeta", &[
        (1, "name", Str, One), (2, "generateName", Str, One), (3, "namespace", Str, One), (5, "uid", Str, One),
        (6, "resourceVersion", Str, One), (7, "generation", Int, One), (8, "creationTimestamp", Time, One),
        (9, "deletionTimestamp", Time, Ptr), (10, "deletionGracePeriodSeconds", Int, Ptr), (11, "labels", MapStr, One),
        (12, "annotations", MapStr, One), (13, "ownerReferences", Msg("OwnerReference"), Rep), (14, "finalizers", Str, Rep),
    ]),
    ("OwnerReference", &[
        (1, "kind", Str, One), (3, "name", Str, One), (4, "uid", Str, One), (5, "apiVersion", Str, One),
        (6, "controller", Bool, Ptr), (7, "blockOwnerDeletion", Bool, Ptr),
    ]),
    ("LabelSelector", &[(1, "matchLabels", MapStr, One), (2, "matchExpressions", Msg("LabelSelectorRequirement"), Rep)]),
    ("LabelSelectorRequirement", &[(1, "key", Str, One), (2, "operator", Str, One), (3, "values", Str, Rep)]),
    ("Deployment", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("DeploymentSpec"), One)]),
    ("DeploymentSpec", &[
        (1, "replicas", Int, Ptr), (2, "selector", Msg("LabelSelector"), Ptr), (3, "template", Msg("PodTemplateSpec"), One),
        (4, "strategy", Msg("DeploymentStrategy"), One), (5, "minReadySeconds", Int, One), (6, "revisionHistoryLimit", Int, Ptr),
        (7, "paused", Bool, One), (9, "progressDeadlineSeconds", Int, Ptr),
    ]),
    ("DeploymentStrategy", &[(1, "type", Str, One), (2, "rollingUpdate", Msg("RollingUpdateDeployment"), Ptr)]),
    ("RollingUpdateDeployment", &[(1, "maxUnavailable", IntOrStr, Ptr), (2, "maxSurge", IntOrStr, Ptr)]),
    ("ReplicaSet", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("ReplicaSetSpec"), One)]),
    ("ReplicaSetSpec", &[
        (1, "replicas", Int, Ptr), (2, "selector", Msg("LabelSelector"), Ptr), (3, "template", Msg("PodTemplateSpec"), One),
        (4, "minReadySeconds", Int, One),
    ]),
    ("PodTemplateSpec", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("PodSpec"), One)]),
    ("Pod", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("PodSpec"), One)]),
    ("PodSpec", &[
        (1, "volumes", Msg("Volume"), Rep), (2, "containers", Msg("Container"), Rep), (3, "restartPolicy", Str, One),
        (4, "terminationGracePeriodSeconds", Int, Ptr), (5, "activeDeadlineSeconds", Int, Ptr), (6, "dnsPolicy", Str, One),
        (7, "nodeSelector", MapStr, One), (8, "serviceAccountName", Str, One), (9, "serviceAccount", Str, One),
        (10, "nodeName", Str, One), (11, "hostNetwork", Bool, One), (14, "securityContext", Msg("Empty"), Ptr),
        (15, "imagePullSecrets", Msg("LocalObjectReference"), Rep), (16, "hostname", Str, One), (17, "subdomain", Str, One),
        (19, "schedulerName", Str, One), (20, "initContainers", Msg("Container"), Rep), (21, "automountServiceAccountToken", Bool, Ptr),
        (22, "tolerations", Msg("Toleration"), Rep), (24, "priorityClassName", Str, One), (25, "priority", Int, Ptr),
        (30, "enableServiceLinks", Bool, Ptr),
    ]),
    ("Container", &[
        (1, "name", Str, One), (2, "image", Str, One), (3, "command", Str, Rep), (4, "args", Str, Rep), (5, "workingDir", Str, One),
        (6, "ports", Msg("ContainerPort"), Rep), (7, "env", Msg("EnvVar"), Rep), (8, "resources", Msg("ResourceRequirements"), One),
        (9, "volumeMounts", Msg("VolumeMount"), Rep), (10, "livenessProbe", Msg("Probe"), Ptr), (11, "readinessProbe", Msg("Probe"), Ptr),
        (13, "terminationMessagePath", Str, One), (14, "imagePullPolicy", Str, One), (16, "stdin", Bool, One),
        (17, "stdinOnce", Bool, One), (18, "tty", Bool, One), (20, "terminationMessagePolicy", Str, One),
        (22, "startupProbe", Msg("Probe"), Ptr), (24, "restartPolicy", Str, Ptr),
    ]),
    ("ContainerPort", &[(1, "name", Str, One), (2, "hostPort", Int, One), (3, "containerPort", Int, One), (4, "protocol", Str, One), (5, "hostIP", Str, One)]),
    ("EnvVar", &[(1, "name", Str, One), (2, "value", Str, One), (3, "valueFrom", Msg("EnvVarSource"), Ptr)]),
    ("EnvVarSource", &[(1, "fieldRef", Msg("ObjectFieldSelector"), Ptr), (3, "configMapKeyRef", Msg("KeySelector"), Ptr), (4, "secretKeyRef", Msg("KeySelector"), Ptr)]),
    ("ObjectFieldSelector", &[(1, "apiVersion", Str, One), (2, "fieldPath", Str, One)]),
    ("KeySelector", &[(1, "", Inline("LocalObjectReference"), One), (2, "key", Str, One), (3, "optional", Bool, Ptr)]),
    ("LocalObjectReference", &[(1, "name", Str, One)]),
    ("ResourceRequirements", &[(1, "limits", MapQty, One), (2, "requests", MapQty, One)]),
    ("VolumeMount", &[(1, "name", Str, One), (2, "readOnly", Bool, One), (3, "mountPath", Str, One), (4, "subPath", Str, One)]),
    ("Volume", &[(1, "name", Str, One), (2, "", Inline("VolumeSource"), One)]),
    ("VolumeSource", &[(2, "emptyDir", Msg("EmptyDir"), Ptr), (6, "secret", Msg("SecretVolume"), Ptr), (19, "configMap", Msg("ConfigMapVolume"), Ptr)]),
    ("EmptyDir", &[(1, "medium", Str, One), (2, "sizeLimit", Qty, Ptr)]),
    ("SecretVolume", &[(1, "secretName", Str, One), (3, "defaultMode", Int, Ptr), (4, "optional", Bool, Ptr)]),
    ("ConfigMapVolume", &[(1, "", Inline("LocalObjectReference"), One), (3, "defaultMode", Int, Ptr), (4, "optional", Bool, Ptr)]),
    ("Probe", &[(1, "", Inline("ProbeHandler"), One), (2, "initialDelaySeconds", Int, One), (3, "timeoutSeconds", Int, One), (4, "periodSeconds", Int, One), (5, "successThreshold", Int, One), (6, "failureThreshold", Int, One)]),
    ("ProbeHandler", &[(1, "exec", Msg("ExecAction"), Ptr), (2, "httpGet", Msg("HTTPGetAction"), Ptr), (3, "tcpSocket", Msg("TCPSocketAction"), Ptr)]),
    ("ExecAction", &[(1, "command", Str, Rep)]),
    ("HTTPGetAction", &[(1, "path", Str, One), (2, "port", IntOrStr, One), (3, "host", Str, One), (4, "scheme", Str, One)]),
    ("TCPSocketAction", &[(1, "port", IntOrStr, One), (2, "host", Str, One)]),
    ("Toleration", &[(1, "key", Str, One), (2, "operator", Str, One), (3, "value", Str, One), (4, "effect", Str, One), (5, "tolerationSeconds", Int, Ptr)]),
    ("Empty", &[]),
    ("Namespace", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("NamespaceSpec"), One)]),
    ("NamespaceSpec", &[(1, "finalizers", Str, Rep)]),
    ("ConfigMap", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "data", MapStr, One), (3, "binaryData", MapBytes, One), (4, "immutable", Bool, Ptr)]),
    ("Secret", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "data", MapBytes, One), (3, "type", Str, One), (4, "stringData", MapStr, One), (5, "immutable", Bool, Ptr)]),
    ("ServiceAccount", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "secrets", Msg("ObjectReference"), Rep), (3, "imagePullSecrets", Msg("LocalObjectReference"), Rep), (4, "automountServiceAccountToken", Bool, Ptr)]),
    ("ObjectReference", &[(1, "kind", Str, One), (2, "namespace", Str, One), (3, "name", Str, One), (4, "uid", Str, One), (5, "apiVersion", Str, One), (6, "resourceVersion", Str, One), (7, "fieldPath", Str, One)]),
    ("Service", &[(1, "metadata", Msg("ObjectMeta"), One), (2, "spec", Msg("ServiceSpec"), One)]),
    ("ServiceSpec", &[
        (1, "ports", Msg("ServicePort"), Rep), (2, "selector", MapStr, One), (3, "clusterIP", Str, One), (4, "type", Str, One),
        (5, "externalIPs", Str, Rep), (7, "sessionAffinity", Str, One), (10, "externalName", Str, One), (18, "clusterIPs", Str, Rep),
    ]),
    ("ServicePort", &[(1, "name", Str, One), (2, "protocol", Str, One), (3, "port", Int, One), (4, "targetPort", IntOrStr, One), (5, "nodePort", Int, One), (6, "appProtocol", Str, Ptr)]),
];
