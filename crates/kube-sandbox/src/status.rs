//! Kubernetes `Status` error bodies.
//!
//! Every failure the sandbox answers is an [`ApiError`]: an HTTP code, a `reason` from the
//! Kubernetes vocabulary (`NotFound`, `Conflict`, `Invalid`, ...), a message worded like the
//! real kube-apiserver's, and `details`. [`ApiError::to_status`] renders the
//! `{"kind":"Status","apiVersion":"v1",...}` body clients decode.

use serde_json::{Map, Value, json};

use super::resources::ResourceDef;

/// A Kubernetes API error, rendered as a `Status` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Map::new(),
        }
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str) -> Self {
        if !name.is_empty() {
            self.details.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            self.details.insert("group".into(), json!(group));
        }
        if !kind.is_empty() {
            self.details.insert("kind".into(), json!(kind));
        }
        self
    }

    /// `deployments.apps "web" not found`
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(name, res.group, res.plural)
    }

    /// `namespaces "x" not found`, as answered for a create in a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found")).with_details(
            ns,
            "",
            "namespaces",
        )
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(name, res.group, res.plural)
    }

    /// The optimistic-concurrency failure of an update with a stale resourceVersion.
    pub fn conflict(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(name, res.group, res.plural)
    }

    pub fn conflict_msg(res: &ResourceDef, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {msg}",
                res.qualified()
            ),
        )
        .with_details(name, res.group, res.plural)
    }

    /// 422 with field causes, like `errors.NewInvalid`.
    pub fn invalid(res: &ResourceDef, name: &str, field: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                res.qualified_kind()
            ),
        )
        .with_details(name, res.group, res.kind);
        e.details.insert(
            "causes".into(),
            json!([{"reason": "FieldValueInvalid", "message": detail, "field": field}]),
        );
        e
    }

    /// What kube-apiserver answers when a JSON patch does not apply (a failed `test`
    /// op included): `NewGenericServerResponse(422, ...)`, whose message is generic and whose
    /// details are empty; the patch library's own message is not passed on.
    pub fn patch_unprocessable() -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(ct: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                if accepted.is_empty() {
                    ct.to_string()
                } else {
                    accepted.join(", ")
                }
            ),
        )
    }

    /// The path names nothing the server serves.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// `410 Gone` for a watch or list from a resourceVersion older than the retained history.
    pub fn expired(rv: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", msg.into()),
        )
    }

    /// An injected fault: a Status of the given code with the reason the real server uses for it.
    pub fn from_code(code: u16) -> Self {
        let (reason, msg) = match code {
            400 => (
                "BadRequest",
                "the server rejected our request for an unknown reason",
            ),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden (injected fault)"),
            404 => (
                "NotFound",
                "the server could not find the requested resource",
            ),
            405 => (
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
            409 => ("Conflict", "the server reported a conflict"),
            410 => ("Expired", "the resource version is too old"),
            415 => (
                "UnsupportedMediaType",
                "unsupported media type (injected fault)",
            ),
            422 => (
                "Invalid",
                "the server rejected our request due to an error in our request",
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            c if c >= 500 => (
                "InternalError",
                "an error on the server (\"injected fault\") has prevented the request from succeeding",
            ),
            _ => ("", "injected fault"),
        };
        Self::new(code, reason, msg)
    }

    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": Value::Object(self.details.clone()),
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("reason");
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `Status` a successful immediate delete answers with.
pub fn delete_success(res: &ResourceDef, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid},
    })
}
