//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! the JSON the rest of the sandbox works with.
//!
//! client-go 1.32's generated typed clients send built-in objects as protobuf, so
//! `kubectl create deployment|namespace|configmap|secret|service ...` POST protobuf (they
//! accept JSON back). Responses are always JSON. The envelope is `k8s\0` + `runtime.Unknown`
//! {typeMeta{apiVersion, kind}, raw}; `raw` is the object, decoded here with a schema table
//! of field numbers (from k8s.io/api's generated.proto) for the kinds and nested types those
//! commands write. Go's proto2 marshalling always emits non-pointer fields, so zero scalars
//! are dropped (as JSON's omitempty would) except for fields marked [`C::Ptr`] (Go
//! pointers, where presence matters: `replicas: 0`). Fields not in the table are skipped.
//! An unknown kind is answered 415, so a client can retry with JSON.

use serde_json::{Map, Value, json};

/// Field types.
#[derive(Clone, Copy)]
enum T {
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
enum C {
    One,
    Ptr,
    Rep,
}

use C::*;
use T::*;

type Fields = &'static [(u32, &'static str, T, C)];

const SCHEMA: &[(&str, Fields)] = &[
    (
        "ObjectMeta",
        &[
            (1, "name", Str, One),
            (2, "generateName", Str, One),
            (3, "namespace", Str, One),
            (5, "uid", Str, One),
            (6, "resourceVersion", Str, One),
            (7, "generation", Int, One),
            (8, "creationTimestamp", Time, One),
            (9, "deletionTimestamp", Time, Ptr),
            (10, "deletionGracePeriodSeconds", Int, Ptr),
            (11, "labels", MapStr, One),
            (12, "annotations", MapStr, One),
            (13, "ownerReferences", Msg("OwnerReference"), Rep),
            (14, "finalizers", Str, Rep),
        ],
    ),
    (
        "OwnerReference",
        &[
            (1, "kind", Str, One),
            (3, "name", Str, One),
            (4, "uid", Str, One),
            (5, "apiVersion", Str, One),
            (6, "controller", Bool, Ptr),
            (7, "blockOwnerDeletion", Bool, Ptr),
        ],
    ),
    (
        "LabelSelector",
        &[
            (1, "matchLabels", MapStr, One),
            (2, "matchExpressions", Msg("LabelSelectorRequirement"), Rep),
        ],
    ),
    (
        "LabelSelectorRequirement",
        &[
            (1, "key", Str, One),
            (2, "operator", Str, One),
            (3, "values", Str, Rep),
        ],
    ),
    (
        "Deployment",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("DeploymentSpec"), One),
        ],
    ),
    (
        "DeploymentSpec",
        &[
            (1, "replicas", Int, Ptr),
            (2, "selector", Msg("LabelSelector"), Ptr),
            (3, "template", Msg("PodTemplateSpec"), One),
            (4, "strategy", Msg("DeploymentStrategy"), One),
            (5, "minReadySeconds", Int, One),
            (6, "revisionHistoryLimit", Int, Ptr),
            (7, "paused", Bool, One),
            (9, "progressDeadlineSeconds", Int, Ptr),
        ],
    ),
    (
        "DeploymentStrategy",
        &[
            (1, "type", Str, One),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment"), Ptr),
        ],
    ),
    (
        "RollingUpdateDeployment",
        &[
            (1, "maxUnavailable", IntOrStr, Ptr),
            (2, "maxSurge", IntOrStr, Ptr),
        ],
    ),
    (
        "ReplicaSet",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("ReplicaSetSpec"), One),
        ],
    ),
    (
        "ReplicaSetSpec",
        &[
            (1, "replicas", Int, Ptr),
            (2, "selector", Msg("LabelSelector"), Ptr),
            (3, "template", Msg("PodTemplateSpec"), One),
            (4, "minReadySeconds", Int, One),
        ],
    ),
    (
        "PodTemplateSpec",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("PodSpec"), One),
        ],
    ),
    (
        "Pod",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("PodSpec"), One),
        ],
    ),
    (
        "PodSpec",
        &[
            (1, "volumes", Msg("Volume"), Rep),
            (2, "containers", Msg("Container"), Rep),
            (3, "restartPolicy", Str, One),
            (4, "terminationGracePeriodSeconds", Int, Ptr),
            (5, "activeDeadlineSeconds", Int, Ptr),
            (6, "dnsPolicy", Str, One),
            (7, "nodeSelector", MapStr, One),
            (8, "serviceAccountName", Str, One),
            (9, "serviceAccount", Str, One),
            (10, "nodeName", Str, One),
            (11, "hostNetwork", Bool, One),
            (14, "securityContext", Msg("Empty"), Ptr),
            (15, "imagePullSecrets", Msg("LocalObjectReference"), Rep),
            (16, "hostname", Str, One),
            (17, "subdomain", Str, One),
            (19, "schedulerName", Str, One),
            (20, "initContainers", Msg("Container"), Rep),
            (21, "automountServiceAccountToken", Bool, Ptr),
            (22, "tolerations", Msg("Toleration"), Rep),
            (24, "priorityClassName", Str, One),
            (25, "priority", Int, Ptr),
            (30, "enableServiceLinks", Bool, Ptr),
        ],
    ),
    (
        "Container",
        &[
            (1, "name", Str, One),
            (2, "image", Str, One),
            (3, "command", Str, Rep),
            (4, "args", Str, Rep),
            (5, "workingDir", Str, One),
            (6, "ports", Msg("ContainerPort"), Rep),
            (7, "env", Msg("EnvVar"), Rep),
            (8, "resources", Msg("ResourceRequirements"), One),
            (9, "volumeMounts", Msg("VolumeMount"), Rep),
            (10, "livenessProbe", Msg("Probe"), Ptr),
            (11, "readinessProbe", Msg("Probe"), Ptr),
            (13, "terminationMessagePath", Str, One),
            (14, "imagePullPolicy", Str, One),
            (16, "stdin", Bool, One),
            (17, "stdinOnce", Bool, One),
            (18, "tty", Bool, One),
            (20, "terminationMessagePolicy", Str, One),
            (22, "startupProbe", Msg("Probe"), Ptr),
            (24, "restartPolicy", Str, Ptr),
        ],
    ),
    (
        "ContainerPort",
        &[
            (1, "name", Str, One),
            (2, "hostPort", Int, One),
            (3, "containerPort", Int, One),
            (4, "protocol", Str, One),
            (5, "hostIP", Str, One),
        ],
    ),
    (
        "EnvVar",
        &[
            (1, "name", Str, One),
            (2, "value", Str, One),
            (3, "valueFrom", Msg("EnvVarSource"), Ptr),
        ],
    ),
    (
        "EnvVarSource",
        &[
            (1, "fieldRef", Msg("ObjectFieldSelector"), Ptr),
            (3, "configMapKeyRef", Msg("KeySelector"), Ptr),
            (4, "secretKeyRef", Msg("KeySelector"), Ptr),
        ],
    ),
    (
        "ObjectFieldSelector",
        &[(1, "apiVersion", Str, One), (2, "fieldPath", Str, One)],
    ),
    (
        "KeySelector",
        &[
            (1, "", Inline("LocalObjectReference"), One),
            (2, "key", Str, One),
            (3, "optional", Bool, Ptr),
        ],
    ),
    ("LocalObjectReference", &[(1, "name", Str, One)]),
    (
        "ResourceRequirements",
        &[(1, "limits", MapQty, One), (2, "requests", MapQty, One)],
    ),
    (
        "VolumeMount",
        &[
            (1, "name", Str, One),
            (2, "readOnly", Bool, One),
            (3, "mountPath", Str, One),
            (4, "subPath", Str, One),
        ],
    ),
    (
        "Volume",
        &[(1, "name", Str, One), (2, "", Inline("VolumeSource"), One)],
    ),
    (
        "VolumeSource",
        &[
            (2, "emptyDir", Msg("EmptyDir"), Ptr),
            (6, "secret", Msg("SecretVolume"), Ptr),
            (19, "configMap", Msg("ConfigMapVolume"), Ptr),
        ],
    ),
    (
        "EmptyDir",
        &[(1, "medium", Str, One), (2, "sizeLimit", Qty, Ptr)],
    ),
    (
        "SecretVolume",
        &[
            (1, "secretName", Str, One),
            (3, "defaultMode", Int, Ptr),
            (4, "optional", Bool, Ptr),
        ],
    ),
    (
        "ConfigMapVolume",
        &[
            (1, "", Inline("LocalObjectReference"), One),
            (3, "defaultMode", Int, Ptr),
            (4, "optional", Bool, Ptr),
        ],
    ),
    (
        "Probe",
        &[
            (1, "", Inline("ProbeHandler"), One),
            (2, "initialDelaySeconds", Int, One),
            (3, "timeoutSeconds", Int, One),
            (4, "periodSeconds", Int, One),
            (5, "successThreshold", Int, One),
            (6, "failureThreshold", Int, One),
        ],
    ),
    (
        "ProbeHandler",
        &[
            (1, "exec", Msg("ExecAction"), Ptr),
            (2, "httpGet", Msg("HTTPGetAction"), Ptr),
            (3, "tcpSocket", Msg("TCPSocketAction"), Ptr),
        ],
    ),
    ("ExecAction", &[(1, "command", Str, Rep)]),
    (
        "HTTPGetAction",
        &[
            (1, "path", Str, One),
            (2, "port", IntOrStr, One),
            (3, "host", Str, One),
            (4, "scheme", Str, One),
        ],
    ),
    (
        "TCPSocketAction",
        &[(1, "port", IntOrStr, One), (2, "host", Str, One)],
    ),
    (
        "Toleration",
        &[
            (1, "key", Str, One),
            (2, "operator", Str, One),
            (3, "value", Str, One),
            (4, "effect", Str, One),
            (5, "tolerationSeconds", Int, Ptr),
        ],
    ),
    ("Empty", &[]),
    (
        "Namespace",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("NamespaceSpec"), One),
        ],
    ),
    ("NamespaceSpec", &[(1, "finalizers", Str, Rep)]),
    (
        "ConfigMap",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "data", MapStr, One),
            (3, "binaryData", MapBytes, One),
            (4, "immutable", Bool, Ptr),
        ],
    ),
    (
        "Secret",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "data", MapBytes, One),
            (3, "type", Str, One),
            (4, "stringData", MapStr, One),
            (5, "immutable", Bool, Ptr),
        ],
    ),
    (
        "Service",
        &[
            (1, "metadata", Msg("ObjectMeta"), One),
            (2, "spec", Msg("ServiceSpec"), One),
        ],
    ),
    (
        "ServiceSpec",
        &[
            (1, "ports", Msg("ServicePort"), Rep),
            (2, "selector", MapStr, One),
            (3, "clusterIP", Str, One),
            (4, "type", Str, One),
            (5, "externalIPs", Str, Rep),
            (7, "sessionAffinity", Str, One),
            (10, "externalName", Str, One),
            (18, "clusterIPs", Str, Rep),
        ],
    ),
    (
        "ServicePort",
        &[
            (1, "name", Str, One),
            (2, "protocol", Str, One),
            (3, "port", Int, One),
            (4, "targetPort", IntOrStr, One),
            (5, "nodePort", Int, One),
            (6, "appProtocol", Str, Ptr),
        ],
    ),
];

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated varint")?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if self.i + n > self.b.len() {
            return Err("truncated field".into());
        }
        self.i += n;
        Ok(())
    }

    /// Next (field number, wire type), or None at the end.
    fn tag(&mut self) -> Result<Option<(u32, u64)>, String> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some(((t >> 3) as u32, t & 7)))
    }
}

fn fields_of(msg: &str) -> Result<Fields, String> {
    SCHEMA
        .iter()
        .find(|(n, _)| *n == msg)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("no protobuf schema for {msg}"))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

/// key=1, value=2 entries of a map field.
fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((f, w)) = r.tag()? {
        match (f, w) {
            (1, 2) => k = utf8(r.bytes()?)?,
            (2, 2) => v = r.bytes()?.to_vec(),
            _ => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn special(ty: T, b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b, i: 0 };
    let mut vals: [u64; 3] = [0; 3];
    let mut s = String::new();
    while let Some((f, w)) = r.tag()? {
        match (ty, f, w) {
            (Time, 1 | 2, 0) | (IntOrStr, 1 | 2, 0) => vals[f as usize] = r.varint()?,
            (IntOrStr, 3, 2) | (Qty, 1, 2) => s = utf8(r.bytes()?)?,
            _ => r.skip(w)?,
        }
    }
    Ok(match ty {
        Time if vals[1] == 0 => Value::Null,
        Time => {
            let ts = jiff::Timestamp::from_second(vals[1] as i64).map_err(|e| e.to_string())?;
            json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
        IntOrStr if vals[1] == 1 => json!(s),
        IntOrStr => json!(vals[2] as i32),
        _ => json!(s),
    })
}

fn zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

fn message(msg: &str, b: &[u8]) -> Result<Map<String, Value>, String> {
    let fields = fields_of(msg)?;
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    let mut present: Vec<&str> = Vec::new();
    while let Some((num, wire)) = r.tag()? {
        let Some(&(_, name, ty, card)) = fields.iter().find(|f| f.0 == num) else {
            r.skip(wire)?;
            continue;
        };
        let v = match (ty, wire) {
            (Int, 0) => json!(r.varint()? as i64),
            (Bool, 0) => json!(r.varint()? != 0),
            (Str, 2) => json!(utf8(r.bytes()?)?),
            (Msg(m), 2) => Value::Object(message(m, r.bytes()?)?),
            (Inline(m), 2) => {
                out.extend(message(m, r.bytes()?)?);
                continue;
            }
            (MapStr | MapQty | MapBytes, 2) => {
                let (k, raw) = map_entry(r.bytes()?)?;
                let v = match ty {
                    MapStr => json!(utf8(&raw)?),
                    MapQty => special(Qty, &raw)?,
                    _ => json!(super::tls::base64(&raw)),
                };
                if let Some(m) = out.entry(name).or_insert_with(|| json!({})).as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Time | IntOrStr | Qty, 2) => special(ty, r.bytes()?)?,
            (_, w) => return Err(format!("{msg}.{name}: unexpected wire type {w}")),
        };
        if card == Rep {
            if let Some(a) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                a.push(v);
            }
        } else {
            present.push(name);
            out.insert(name.to_string(), v);
        }
    }
    // omitempty for non-pointer fields.
    for &(_, name, _, card) in fields {
        if card == One && out.get(name).is_some_and(zero) {
            out.remove(name);
        }
    }
    Ok(out)
}

/// Decode a `k8s\0`-prefixed protobuf body into a JSON object with apiVersion and kind.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("not a Kubernetes protobuf body")?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((f, w)) = r.tag()? {
        match (f, w) {
            (1, 2) => {
                let mut tm = Reader {
                    b: r.bytes()?,
                    i: 0,
                };
                while let Some((f, w)) = tm.tag()? {
                    match (f, w) {
                        (1, 2) => api_version = utf8(tm.bytes()?)?,
                        (2, 2) => kind = utf8(tm.bytes()?)?,
                        _ => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            _ => r.skip(w)?,
        }
    }
    let mut obj = message(&kind, raw)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let meta = field(1, b"team-a");
        let ns = field(1, &meta);
        let tm = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &ns)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        );
    }
}
