//! PATCH bodies: choosing the mechanism by Content-Type and applying it to a stored object.
//!
//! JSON patch (RFC 6902, `test` included) and JSON merge patch (RFC 7386) come from the
//! `json-patch` crate; strategic merge patch is `smp.rs`. Errors are worded as the real
//! server's: an undecodable patch is 400 BadRequest; a JSON patch that does not apply (a
//! failed `test`, a missing path) is 422 Invalid with the generic message kube-apiserver
//! gives (`NewGenericServerResponse`), so nothing is changed.

use serde_json::Value;

use super::resources::ResourceDef;
use super::smp;
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
}

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";

impl PatchKind {
    /// The patch kind for a Content-Type, or the 415 the real server answers.
    pub fn from_content_type(ct: Option<&str>, def: &ResourceDef) -> Result<Self, ApiError> {
        let ct = ct.unwrap_or_default();
        let base = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        // The real server also lists application/apply-patch+yaml; the sandbox has no
        // server-side apply, so it does not claim it.
        let accepted: Vec<&str> = if def.strategic_merge {
            vec![JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]
        } else {
            vec![JSON_PATCH, MERGE_PATCH]
        };
        match base.as_str() {
            JSON_PATCH => Ok(PatchKind::Json),
            MERGE_PATCH => Ok(PatchKind::Merge),
            STRATEGIC_PATCH if def.strategic_merge => Ok(PatchKind::Strategic),
            // Server-side apply is not simulated: answered like an unknown patch type.
            _ => Err(ApiError::unsupported_media_type(ct, &accepted)),
        }
    }
}

/// Apply `body` to `current`, returning the patched object.
pub fn apply(kind: PatchKind, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if ops.0.len() > 10_000 {
                return Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!(
                        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got {}",
                        ops.0.len()
                    ),
                ));
            }
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops.0).map_err(|_| ApiError::patch_unprocessable())?;
            Ok(doc)
        }
        PatchKind::Merge => {
            let p: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("invalid JSON document"));
            }
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchKind::Strategic => {
            let p: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "unable to find api field in struct for the patch: not an object",
                ));
            }
            smp::apply(current, &p).map_err(ApiError::bad_request)
        }
    }
}
