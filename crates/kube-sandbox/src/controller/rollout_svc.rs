//! The Services an Argo Rollout manages (`rollout/service.go`): the canary's
//! `stableService` / `canaryService` and the blue-green `activeService` / `previewService`
//! get the selector `rollouts-pod-template-hash: <hash>` of the ReplicaSet they should
//! send traffic to, and the annotation `argo-rollouts.argoproj.io/managed-by-rollouts`;
//! each switch records a `SwitchService` Event on the Rollout.

use serde_json::{Value, json};

use super::objects::{ensure_map, name_of, obj_at};
use super::rollout::Ctx;
use super::rollout_rs::{event, hash_of};
use super::rollout_spec::{HASH_LABEL, MANAGED_BY, int, text};
use crate::writes::Part;

/// The Service named `name` in the Rollout's namespace.
pub fn get(ctx: &Ctx, name: &str) -> Option<Value> {
    let def = ctx.service_def()?;
    ctx.store.get(&def, Some(&ctx.ns()), name).ok()
}

/// Its `rollouts-pod-template-hash` selector.
pub fn selector_of(svc: Option<&Value>) -> String {
    svc.and_then(|s| s.pointer("/spec/selector"))
        .and_then(|s| s.get(HASH_LABEL))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The hashes the Rollout's Services currently select.
pub fn selector_hashes(ctx: &Ctx) -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "canary/canaryService",
        "canary/stableService",
        "blueGreen/activeService",
        "blueGreen/previewService",
    ] {
        let name = text(&ctx.ro, &format!("/spec/strategy/{f}"));
        if !name.is_empty() {
            let h = selector_of(get(ctx, name).as_ref());
            if !h.is_empty() {
                out.push(h);
            }
        }
    }
    out
}

/// `switchServiceSelector`.
pub fn switch(ctx: &Ctx, name: &str, hash: &str) -> Result<(), String> {
    let (Some(def), Some(svc)) = (ctx.service_def(), get(ctx, name)) else {
        return Ok(());
    };
    let old = selector_of(Some(&svc));
    let managed = svc
        .pointer("/metadata/annotations")
        .is_some_and(|a| a.get(MANAGED_BY).is_some());
    if old == hash && managed {
        return Ok(());
    }
    let ro_name = name_of(&ctx.ro);
    ctx.store
        .modify(&def, Some(&ctx.ns()), name, Part::Main, false, |cur| {
            let mut n = cur.clone();
            if !managed {
                ensure_map(&mut n, "annotations").insert(MANAGED_BY.into(), json!(ro_name));
            }
            let spec = obj_at(&mut n, "spec");
            let sel = spec.entry("selector").or_insert_with(|| json!({}));
            if !sel.is_object() {
                *sel = json!({});
            }
            sel[HASH_LABEL] = json!(hash);
            Ok(n)
        })
        .map_err(|e| e.to_string())?;
    let msg = format!("Switched selector for service '{name}' from '{old}' to '{hash}'");
    event(ctx.store, &ctx.ro, "Normal", "SwitchService", &msg);
    Ok(())
}

/// `ensureSVCTargets`: point `svc` at `rs`; with `check_availability`, only once `rs` has pods
/// available (all of them when adopting a Service not yet managed, one otherwise).
fn ensure(
    ctx: &Ctx,
    svc: &str,
    rs: Option<&Value>,
    check_availability: bool,
) -> Result<(), String> {
    let Some(rs) = rs.filter(|_| !svc.is_empty()) else {
        return Ok(());
    };
    let Some(current) = get(ctx, svc) else {
        return Ok(());
    };
    let want = hash_of(rs);
    if selector_of(Some(&current)) == want {
        return Ok(());
    }
    let (spec_n, avail) = (
        int(rs, "/spec/replicas"),
        int(rs, "/status/availableReplicas"),
    );
    let managed = current
        .pointer("/metadata/annotations")
        .is_some_and(|a| a.get(MANAGED_BY).is_some());
    // Adopting a Service: only once the ReplicaSet is fully available (`IsReplicaSetAvailable`).
    let fully_available = spec_n != 0 && avail != 0 && spec_n <= avail;
    if check_availability && !managed && !fully_available {
        return Ok(());
    }
    // `IsReplicaSetPartiallyAvailable`.
    if check_availability && avail == 0 {
        return Ok(());
    }
    switch(ctx, svc, want)
}

/// `reconcileStableAndCanaryService`: the stable Service follows the stable ReplicaSet, the
/// canary Service the new one, or the stable one while aborted.
///
/// While aborted with traffic routing, upstream points the canary Service at the new
/// ReplicaSet here and `reconcileTrafficRouting` points it back at the stable one (see
/// [`canary_back_to_stable`]), so it flaps for as long as the canary keeps available pods
/// (argo-rollouts#3078). The sandbox, whose reads are never stale, would turn that into a
/// hot loop; it skips the first switch and keeps the end state: the canary Service on stable.
pub fn canary_services(ctx: &Ctx) -> Result<(), String> {
    let stable_svc = text(&ctx.ro, "/spec/strategy/canary/stableService").to_string();
    let canary_svc = text(&ctx.ro, "/spec/strategy/canary/canaryService").to_string();
    ensure(ctx, &stable_svc, ctx.stable_rs.as_ref(), true)?;
    if ctx.pause.is_aborted(&ctx.ro) {
        if super::rollout_spec::traffic_routed(&ctx.ro) {
            return Ok(());
        }
        return ensure(ctx, &canary_svc, ctx.stable_rs.as_ref(), true);
    }
    ensure(ctx, &canary_svc, ctx.new_rs.as_ref(), true)
}

/// The abort branch of `reconcileTrafficRouting`: the canary Service goes back to the
/// stable ReplicaSet without an availability check (no `dynamicStableScale` in the sandbox).
pub fn canary_back_to_stable(ctx: &Ctx) -> Result<(), String> {
    let canary_svc = text(&ctx.ro, "/spec/strategy/canary/canaryService").to_string();
    ensure(ctx, &canary_svc, ctx.stable_rs.as_ref(), false)
}
