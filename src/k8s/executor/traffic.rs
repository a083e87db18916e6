//! Traffic switches: a Service's selector back to the previous one; a VirtualService's weights
//! back to 100% stable. Both re-read the object, refuse if it no longer shows what the alert
//! blamed, and send a minimal JSON patch guarded by a resourceVersion `test`.

use kube::api::{Api, DynamicObject};
use serde_json::json;

use super::{Attempt, Executor, failed, read_failed, skipped, succeeded, write_answer};
use crate::core::engine::{Outcome, ResetWeights, SwitchSelector};
use crate::core::traffic::{selector_patch, weights_patch};
use crate::core::undo::RevisionRef;
use crate::k8s::{service_state, services, virtual_service_state, virtual_services};
use crate::store::ActionResult;

fn superseded(what: &str, now: &str) -> Attempt {
    Attempt::Done(skipped(
        Outcome::Superseded,
        format!(
            "{what} changed again since the alert was correlated (now {now}); not reverting someone else's change"
        ),
    ))
}

impl Executor {
    pub(super) async fn switch_selector_once(&self, c: &SwitchSelector) -> Attempt {
        let what = format!("service {}/{}", c.namespace, c.name);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &c.namespace, &services());
        let svc = match self.timed(api.get(&c.name)).await {
            Ok(obj) => match service_state(&obj) {
                Some(s) => s,
                None => return Attempt::Done(failed(format!("{what} as read lacks metadata"))),
            },
            Err(e) => {
                let doing = format!("reading {what}");
                return Attempt::Done(read_failed(&doing, "get", "services", e));
            }
        };
        if svc.uid != c.uid || json!(svc.selector) != c.blamed {
            return superseded(&what, &json!(svc.selector).to_string());
        }
        let patch = selector_patch(&svc.resource_version, &c.back_to);
        let written = self.send_json_patch(&api, &c.name, &patch, c.dry_run).await;
        write_answer(
            written,
            &what,
            "services",
            || ActionResult {
                target: Some(traffic_ref(
                    format!("selector {}", c.back_to),
                    &c.target_key,
                )),
                ..succeeded(
                    c.dry_run,
                    Outcome::RolledBack,
                    format!(
                        "switched {what} back from selector {} to {}",
                        c.blamed, c.back_to
                    ),
                    format!("the switch of {what} back to selector {}", c.back_to),
                    json!({"patch": patch}),
                )
            },
            &patch,
        )
    }

    pub(super) async fn reset_weights_once(&self, c: &ResetWeights) -> Attempt {
        let what = format!("virtualservice {}/{}", c.namespace, c.name);
        let version = c.api_version.rsplit('/').next().unwrap_or("v1beta1");
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &c.namespace,
            &virtual_services(version),
        );
        let vs = match self.timed(api.get(&c.name)).await {
            Ok(obj) => match virtual_service_state(&obj) {
                Some(v) => v,
                None => return Attempt::Done(failed(format!("{what} as read lacks metadata"))),
            },
            Err(e) => {
                let doing = format!("reading {what}");
                return Attempt::Done(read_failed(
                    &doing,
                    "get",
                    "virtualservices.networking.istio.io",
                    e,
                ));
            }
        };
        if vs.uid != c.uid || vs.weights != c.blamed {
            return superseded(&what, &json!(vs.weights).to_string());
        }
        let patch = weights_patch(&vs.resource_version, &vs.weights, &c.target);
        let written = self.send_json_patch(&api, &c.name, &patch, c.dry_run).await;
        write_answer(
            written,
            &what,
            "virtualservices.networking.istio.io",
            || ActionResult {
                target: Some(traffic_ref(format!("{} at 100%", c.stable), &c.target_key)),
                ..succeeded(
                    c.dry_run,
                    Outcome::RolledBack,
                    format!(
                        "sent all traffic of {what} back to {} (canary {} at 0%)",
                        c.stable, c.canary
                    ),
                    format!("the reset of {what} to 100% {}", c.stable),
                    json!({"patch": patch}),
                )
            },
            &patch,
        )
    }
}

/// A traffic state as the store records an action target.
pub(super) fn traffic_ref(name: String, key: &str) -> RevisionRef {
    RevisionRef {
        name,
        uid: key.to_string(),
        revision: 0,
        image: None,
    }
}
