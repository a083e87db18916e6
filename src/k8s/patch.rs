//! PATCH requests with the query string kubectl sends.
//!
//! kube-rs writes every query string as `?&name=value`: its form serializer puts a separator
//! before the first pair, and its own tests expect it. The API server reads that the same as
//! `?name=value`, but audit logs and request logs show it, and an engineer comparing
//! rollbackd's revert with `kubectl rollout undo` or `kubectl argo rollouts abort` should find
//! the same request. rollbackd's writes therefore go through [`send_patch`], which builds the
//! request with kube-rs and sends it with the query string cleaned.

use std::fmt::Debug;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::Request;
use kube::core::request::Error as RequestError;
use serde::Serialize;

/// Patches the object `name`, or its `subresource` (`status`), as `Api::patch` and
/// `Api::patch_status` would, with a clean query string.
pub async fn send_patch<P: Serialize + Debug>(
    api: &Api<DynamicObject>,
    name: &str,
    subresource: Option<&str>,
    params: &PatchParams,
    patch: &Patch<P>,
) -> kube::Result<DynamicObject> {
    let builder = Request::new(api.resource_url());
    let mut request = match subresource {
        None => builder.patch(name, params, patch),
        Some(sub) => builder.patch_subresource(sub, name, params, patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    let uri = clean_query(&request.uri().to_string())
        .parse::<http::Uri>()
        .map_err(|e| kube::Error::BuildRequest(RequestError::BuildRequest(e.into())))?;
    *request.uri_mut() = uri;
    api.clone().into_client().request(request).await
}

/// `path?&a=1&b=2` → `path?a=1&b=2`; `path?` → `path`.
fn clean_query(uri: &str) -> String {
    match uri.split_once('?') {
        None => uri.to_string(),
        Some((path, query)) => {
            let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            if pairs.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", pairs.join("&"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_loses_its_empty_pairs_only() {
        assert_eq!(
            clean_query(
                "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/r/status?&fieldManager=rollbackd"
            ),
            "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/r/status?fieldManager=rollbackd"
        );
        assert_eq!(
            clean_query("/x?&dryRun=All&fieldManager=rollbackd"),
            "/x?dryRun=All&fieldManager=rollbackd"
        );
        assert_eq!(clean_query("/x?"), "/x");
        assert_eq!(clean_query("/x"), "/x");
        assert_eq!(clean_query("/x?a=%26"), "/x?a=%26");
    }

    #[test]
    fn kube_rs_still_builds_the_stray_separator() {
        // If kube-rs stops writing `?&`, this module can go.
        let pp = PatchParams {
            field_manager: Some("rollbackd".into()),
            ..PatchParams::default()
        };
        let req = Request::new("/apis/apps/v1/namespaces/ns/deployments")
            .patch("d", &pp, &Patch::Merge(serde_json::json!({})))
            .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "/apis/apps/v1/namespaces/ns/deployments/d?&fieldManager=rollbackd"
        );
    }
}
