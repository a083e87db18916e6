//! The canary strategy's step machine, after argo-rollouts' `rollout/canary.go`
//! (`rolloutCanary`, `syncRolloutStatusCanary`): a template or steps change resets to step 0
//! (or skips the steps when going back to stable); `setWeight` completes once the replica
//! counts (`rollout_replicas.rs`) are reached; `pause` adds a `CanaryPauseStep` pause
//! condition and waits for a promote or its duration; after the last step, or on a full
//! promotion or fast rollback, the new ReplicaSet becomes stable; an abort sends the index
//! back to 0. Also `status.canary.weights` for traffic-routed canaries (no traffic router is
//! driven). Analysis, experiment, plugin and header/mirror-route steps complete at once.

use serde_json::{Value, json};

use super::rollout::Ctx;
use super::rollout_replicas::{at_desired, avail, reconcile_replicasets};
use super::rollout_rs::{self as rs, hash_of, revision_of};
use super::rollout_spec::{
    self as spec, current_step, flag, int, max_weight, pause_seconds, replicas, step_count,
    step_hash, text, traffic_routed,
};
use super::rollout_status::{self as status, CANARY_PAUSE};
use super::rollout_svc;
use crate::store::meta_str;

/// `PodTemplateOrStepsChanged`.
fn changed(ctx: &Ctx) -> bool {
    let cur_step = text(&ctx.ro, "/status/currentStepHash");
    if cur_step.is_empty() || cur_step != step_hash(&ctx.ro) {
        return true;
    }
    let cur = text(&ctx.ro, "/status/currentPodHash");
    !cur.is_empty() && ctx.new_rs.as_ref().is_some_and(|r| hash_of(r) != cur)
}

fn created(r: &Value) -> &str {
    meta_str(r, "creationTimestamp").unwrap_or_default()
}

/// `isRollbackWithinWindow`: going back to a ReplicaSet older than stable, with fewer than
/// `spec.rollbackWindow.revisions` ReplicaSets in between (an Experiment's, annotated
/// `experiment.argoproj.io/name`, not counted). Creation times have one-second resolution
/// and an equal one is not older, as with `metav1.Time.Before`.
pub fn rollback_within_window(ctx: &Ctx) -> bool {
    let (Some(new), Some(stable)) = (&ctx.new_rs, &ctx.stable_rs) else {
        return false;
    };
    if created(new) >= created(stable) {
        return false;
    }
    let Some(window) = ctx
        .ro
        .pointer("/spec/rollbackWindow/revisions")
        .and_then(Value::as_i64)
    else {
        return false;
    };
    let between = ctx
        .all
        .iter()
        .filter(|r| {
            r.pointer("/metadata/annotations/experiment.argoproj.io~1name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .filter(|r| created(r) < created(stable) && created(new) < created(r))
        .count() as i64;
    window > 0 && between < window
}

/// `isFastRollback`: back to the stable ReplicaSet, or within the window.
pub fn fast_rollback(ctx: &Ctx) -> bool {
    let (Some(new), Some(stable)) = (&ctx.new_rs, &ctx.stable_rs) else {
        return false;
    };
    let to_stable = text(&ctx.ro, "/status/stableRS") == hash_of(new);
    let rollback = to_stable || created(new) < created(stable);
    rollback && (to_stable || rollback_within_window(ctx))
}

/// `shouldFullPromote` for the canary.
fn should_promote(ctx: &Ctx) -> Option<String> {
    if ctx.stable_rs.is_none() {
        return Some("Initial deploy".into());
    }
    if ctx.pause.is_aborted(&ctx.ro) {
        return None;
    }
    let n = replicas(&ctx.ro);
    if ctx.new_rs.as_ref().is_none_or(|r| avail(Some(r)) < n) {
        return None;
    }
    if flag(&ctx.ro, "/status/promoteFull") {
        return Some("Full promotion requested".into());
    }
    if fast_rollback(ctx) {
        return Some(
            if rollback_within_window(ctx) {
                "Rollback within window"
            } else {
                "Fast rollback"
            }
            .into(),
        );
    }
    let (_, idx) = current_step(&ctx.ro);
    let count = step_count(&ctx.ro);
    (count == 0 || idx == Some(count)).then(|| format!("Completed all {count} canary steps"))
}

/// `promoteStable`.
pub fn promote(ctx: &mut Ctx, st: &mut serde_json::Map<String, Value>, reason: &str) {
    ctx.pause.clear = true;
    ctx.pause.remove_abort = true;
    st.remove("promoteFull");
    if spec::is_canary(&ctx.ro) {
        let count = step_count(&ctx.ro);
        if count > 0 {
            st.insert("currentStepIndex".into(), json!(count));
        } else {
            st.remove("currentStepIndex");
        }
    }
    let cur = text(&Value::Object(st.clone()), "/currentPodHash").to_string();
    if text(&Value::Object(st.clone()), "/stableRS") != cur {
        st.insert("stableRS".into(), json!(cur));
        let msg = format!(
            "Rollout completed update to revision {} ({cur}): {reason}",
            revision_of(&ctx.ro)
        );
        rs::event(ctx.store, &ctx.ro, "Normal", "RolloutCompleted", &msg);
    }
}

/// `CanaryStepString`.
fn step_string(s: &Value) -> String {
    if let Some(w) = s.get("setWeight") {
        return format!("setWeight: {w}");
    }
    if let Some(p) = s.get("pause") {
        return match p.get("duration") {
            Some(Value::String(d)) => format!("pause: {d}"),
            Some(d) => format!("pause: {d}"),
            None => "pause".into(),
        };
    }
    for k in [
        "experiment",
        "analysis",
        "setCanaryScale",
        "plugin",
        "setHeaderRoute",
        "setMirrorRoute",
    ] {
        if s.get(k).is_some() {
            return k.into();
        }
    }
    "invalid".into()
}

/// `completedCurrentCanaryStep`.
fn step_done(ctx: &mut Ctx) -> bool {
    if flag(&ctx.ro, "/spec/paused") {
        return false;
    }
    let (Some(step), _) = current_step(&ctx.ro) else {
        return false;
    };
    let step = step.clone();
    if step.get("pause").is_some() {
        let cond = ctx
            .ro
            .pointer("/status/pauseConditions")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|c| text(c, "/reason") == CANARY_PAUSE))
            .cloned();
        if flag(&ctx.ro, "/status/controllerPause") && cond.is_none() {
            return true;
        }
        if let (Some(secs), Some(c)) = (pause_seconds(&step), cond) {
            let start = text(&c, "/startTime").parse::<jiff::Timestamp>().ok();
            let end = start.map(|t| t.as_millisecond().saturating_add(secs.saturating_mul(1000)));
            let now = jiff::Timestamp::now().as_millisecond();
            match end {
                Some(end) if now > end => return true,
                Some(end) => ctx.wake_in(std::time::Duration::from_millis((end - now + 1) as u64)),
                None => return true,
            }
        }
        return false;
    }
    if step.get("setWeight").is_some() || step.get("setCanaryScale").is_some() {
        return at_desired(ctx);
    }
    true
}

/// `syncRolloutStatusCanary`.
fn sync_status(ctx: &mut Ctx) -> Result<(), String> {
    let mut st = status::base(ctx);
    let sum = |p: &str| ctx.all.iter().map(|r| int(r, p)).sum::<i64>();
    status::put(
        &mut st,
        "availableReplicas",
        json!(sum("/status/availableReplicas")),
    );
    status::put(&mut st, "HPAReplicas", json!(sum("/status/replicas")));
    let sel = ctx
        .ro
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(json!({}));
    let sel = crate::selectors::format_selector_object(&sel);
    status::put(&mut st, "selector", json!(sel));
    status::put(
        &mut st,
        "stableRS",
        json!(text(&ctx.ro, "/status/stableRS")),
    );
    status::put(&mut st, "currentStepHash", json!(step_hash(&ctx.ro)));
    if let Some(w) = &ctx.weights {
        st.insert("canary".into(), json!({"weights": w}));
    }
    let count = step_count(&ctx.ro);
    let (step, mut idx) = current_step(&ctx.ro);
    let step = step.cloned();
    if changed(ctx) {
        ctx.pause.clear = true;
        ctx.pause.remove_abort = true;
        st.remove("promoteFull");
        let mut reset = (count > 0).then_some(0);
        if let Some(new) = ctx.new_rs.clone().filter(|_| count > 0) {
            let active = int(&new, "/spec/replicas") > 0;
            if text(&ctx.ro, "/status/stableRS") == hash_of(&new) {
                rs::event(
                    ctx.store,
                    &ctx.ro,
                    "Normal",
                    "SkipSteps",
                    "Rollback to stable ReplicaSets",
                );
                reset = Some(count);
            } else if rollback_within_window(ctx) && active {
                let msg = "Rollback to active ReplicaSets within RollbackWindow";
                rs::event(ctx.store, &ctx.ro, "Normal", "SkipSteps", msg);
                reset = Some(count);
            }
        }
        if let Some(i) = reset {
            st.insert("currentStepIndex".into(), json!(i));
        }
        return status::persist(ctx, st);
    }
    if flag(&ctx.ro, "/status/promoteFull") || rollback_within_window(ctx) {
        ctx.pause.clear = true;
        ctx.pause.remove_abort = true;
        if count > 0 {
            idx = Some(count);
        }
    }
    if let Some(reason) = should_promote(ctx) {
        promote(ctx, &mut st, &reason);
        return status::persist(ctx, st);
    }
    if ctx.pause.is_aborted(&ctx.ro) {
        if count > 0 {
            let promoted = text(&Value::Object(st.clone()), "/stableRS")
                == text(&Value::Object(st.clone()), "/currentPodHash");
            st.insert(
                "currentStepIndex".into(),
                json!(if promoted { count } else { 0 }),
            );
        }
        return status::persist(ctx, st);
    }
    if step_done(ctx)
        && let (Some(step), Some(i)) = (&step, idx)
    {
        idx = Some(i + 1);
        let msg = format!(
            "Rollout step {}/{count} completed ({})",
            i + 1,
            step_string(step)
        );
        rs::event(ctx.store, &ctx.ro, "Normal", "RolloutStepCompleted", &msg);
        ctx.pause.remove.push(CANARY_PAUSE);
    }
    if let Some(i) = idx {
        st.insert("currentStepIndex".into(), json!(i));
    }
    status::persist(ctx, st)
}

/// `reconcileCanaryPause`: returns whether the reconcile stops at a pause step.
fn reconcile_pause(ctx: &mut Ctx) -> bool {
    if flag(&ctx.ro, "/spec/paused") || flag(&ctx.ro, "/status/promoteFull") {
        return false;
    }
    let (Some(step), _) = current_step(&ctx.ro) else {
        return false;
    };
    if step.get("pause").is_none() {
        return false;
    }
    let has_cond = ctx
        .ro
        .pointer("/status/pauseConditions")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|c| text(c, "/reason") == CANARY_PAUSE));
    if !has_cond && !flag(&ctx.ro, "/status/controllerPause") {
        ctx.pause.add.push(CANARY_PAUSE);
    }
    true
}

/// `reconcileTrafficRouting` (status weights only; no traffic router is driven; on abort the
/// canary Service goes back to the stable ReplicaSet).
fn traffic(ctx: &mut Ctx) -> Result<(), String> {
    if !traffic_routed(&ctx.ro) {
        ctx.weights = None;
        return Ok(());
    }
    let promoted = text(&ctx.ro, "/status/stableRS") == text(&ctx.ro, "/status/currentPodHash");
    if !promoted && ctx.pause.is_aborted(&ctx.ro) {
        rollout_svc::canary_back_to_stable(ctx)?;
    }
    let ro = &ctx.ro;
    let (_, idx) = current_step(ro);
    let max = max_weight(ro);
    let new_avail = ctx.new_rs.as_ref().map(|r| avail(Some(r))).unwrap_or(0);
    let mut weight = 0;
    if promoted || ctx.pause.is_aborted(ro) || ctx.new_rs.is_none() || new_avail == 0 {
    } else if flag(ro, "/status/promoteFull") {
        weight = int(ro, "/status/canary/weights/canary/weight");
    } else if let Some(i) = idx {
        if !at_desired(ctx) {
            weight = spec::steps(ro)[..(i as usize).min(spec::steps(ro).len())]
                .iter()
                .rev()
                .find_map(|s| s.get("setWeight").and_then(Value::as_i64))
                .unwrap_or(0);
        } else if i != step_count(ro) {
            weight = spec::current_set_weight(ro);
        } else {
            weight = max;
        }
    }
    let stable_need = (max - weight) * replicas(ro) / max.max(1);
    let stable_avail = ctx.stable_rs.as_ref().map(|r| avail(Some(r))).unwrap_or(0);
    if stable_avail < stable_need {
        return Ok(());
    }
    let canary = ctx
        .new_rs
        .as_ref()
        .map(|r| hash_of(r).to_string())
        .unwrap_or_default();
    let stable = ctx
        .stable_rs
        .as_ref()
        .map(|r| hash_of(r).to_string())
        .unwrap_or_default();
    let mut c = json!({"weight": weight});
    let mut s = json!({"weight": max - weight});
    for (o, svc, h) in [
        (&mut c, "canaryService", canary),
        (&mut s, "stableService", stable),
    ] {
        let name = text(ro, &format!("/spec/strategy/canary/{svc}"));
        if !name.is_empty() {
            o["serviceName"] = json!(name);
        }
        if !h.is_empty() {
            o["podTemplateHash"] = json!(h);
        }
    }
    let new = json!({"canary": c, "stable": s});
    let prev = ctx.weights.clone();
    if prev.as_ref() != Some(&new) {
        let from = prev.as_ref().map(|p| int(p, "/canary/weight"));
        let detail = match from {
            None => format!("to {weight}"),
            Some(f) if f != weight => format!("from {f} to {weight}"),
            Some(_) => String::new(),
        };
        rs::event(
            ctx.store,
            &ctx.ro,
            "Normal",
            "TrafficWeightUpdated",
            &format!("Traffic weight updated {detail}"),
        );
        ctx.weights = Some(new);
    }
    Ok(())
}

/// `rolloutCanary`.
pub fn sync(ctx: &mut Ctx) -> Result<(), String> {
    if changed(ctx) {
        return sync_status(ctx);
    }
    let others = ctx.others.clone();
    rs::cleanup(ctx.store, &ctx.rsdef, &ctx.ro, &others);
    rollout_svc::canary_services(ctx)?;
    traffic(ctx)?;
    let scaled = reconcile_replicasets(ctx)?;
    ctx.refresh()?;
    if scaled {
        return sync_status(ctx);
    }
    reconcile_pause(ctx);
    sync_status(ctx)
}
