//! The canary strategy, after argo-rollouts' `rollout/canary.go`, `rollout/replicaset.go`
//! and `utils/replicaset/canary.go`: replica counts per weight (basic canary:
//! `CalculateReplicaCountsForBasicCanary` with maxSurge/maxUnavailable; traffic-routed:
//! canary = ceil(weight × replicas / 100), stable stays full), the step machine (`setWeight`
//! waits for the counts, `pause` adds a `CanaryPauseStep` pause condition and waits for a
//! promote or its duration), promotion of the new ReplicaSet to stable, abort (weight 0; a
//! traffic-routed canary keeps its pods until `abortScaleDownDelaySeconds`), and
//! `status.canary.weights` for traffic-routed canaries. Analysis, experiment, plugin and
//! header/mirror-route steps complete at once (nothing runs them).

use serde_json::{Value, json};

use super::rollout::Ctx;
use super::rollout_rs::{self as rs, deadline_remaining, hash_of, revision_of};
use super::rollout_spec::{
    self as spec, abort_scale_down_delay, canary_replicas_or_weight, current_step, flag, int,
    max_weight, pause_seconds, replicas, step_count, step_hash, surge_and_unavailable, text,
    traffic_routed,
};
use super::rollout_status::{self as status, CANARY_PAUSE};
use super::rollout_svc;
use crate::sandbox::store::meta_str;

type Rs<'a> = Option<&'a Value>;

fn spec_n(r: Rs) -> i64 {
    r.map(|r| int(r, "/spec/replicas")).unwrap_or(0)
}

fn avail(r: Rs) -> i64 {
    r.map(|r| int(r, "/status/availableReplicas")).unwrap_or(0)
}

/// `approximateWeightedCanaryStableReplicaCounts`.
fn approximate(n: i64, weight: i64, max_w: i64, surge: i64) -> (i64, i64) {
    if n == 0 {
        return (0, 0);
    }
    let exact = (n * weight) as f64 / max_w as f64;
    let (ceil, floor) = (exact.ceil() as i64, exact.floor() as i64);
    let tied = |total: i64| ((total * weight) as f64 / max_w as f64).fract() == 0.5;
    let zero_ok = weight == max_w || weight == 0 || (n == 1 && surge == 0);
    let mut options = Vec::new();
    if ceil < n || zero_ok {
        options.push((ceil, n));
    }
    if !tied(n) && (floor != 0 || zero_ok) {
        options.push((floor, n));
    }
    if surge > 0 {
        options.push((ceil, n + 1));
        if !tied(n + 1) && (floor != 0 || zero_ok) {
            options.push((floor, n + 1));
        }
    }
    let delta = |(c, t): (i64, i64)| ((c * max_w) as f64 / t as f64 - weight as f64).abs();
    let Some(mut best) = options.first().copied() else {
        return (0, n);
    };
    for o in options.into_iter().skip(1) {
        if delta(o) < delta(best) {
            best = o;
        }
    }
    (best.0, best.1 - best.0)
}

fn for_scale_down(r: Rs, ignore_availability: bool) -> i64 {
    let Some(r) = r else { return 0 };
    let (s, a) = (
        int(r, "/spec/replicas"),
        int(r, "/status/availableReplicas"),
    );
    if s < a || ignore_availability { s } else { a }
}

/// `adjustReplicaWithinLimits`.
fn adjust(
    drain: Rs,
    adj: Rs,
    mut drain_n: i64,
    mut adj_n: i64,
    max_n: i64,
    min_avail: i64,
) -> (i64, i64) {
    let mut over = (adj_n + drain_n - max_n).max(0);
    let mut total = 0;
    if drain.is_some() {
        total += avail(drain).min(drain_n);
    }
    if adj.is_some() {
        adj_n -= over;
        total += avail(adj).min(adj_n);
        let extra = (avail(adj) - adj_n).max(0);
        let more = (min_avail - total).max(0);
        adj_n += extra.min(more);
        over = (adj_n + drain_n - max_n).max(0);
        drain_n -= over;
    }
    (drain_n, adj_n)
}

/// `CalculateReplicaCountsForBasicCanary`: (new, stable).
fn basic_counts(ro: &Value, new: Rs, stable: Rs, others: &[Value]) -> (i64, i64) {
    let n = replicas(ro);
    let (_, weight) = canary_replicas_or_weight(ro);
    let (surge, unavailable) = surge_and_unavailable(ro);
    let (mut want_new, mut want_stable) = approximate(n, weight, max_weight(ro), surge);
    let mut new_n = spec_n(new);
    let scale_stable = stable.is_some_and(|s| new.is_none_or(|nw| !name_eq(s, nw)));
    let mut stable_n = 0;
    if scale_stable {
        stable_n = spec_n(stable);
    } else {
        want_new = n;
        want_stable = 0;
    }
    let max_n = n + surge;
    let mut total: i64 = others.iter().map(|r| int(r, "/spec/replicas")).sum::<i64>() + spec_n(new);
    if scale_stable {
        total += spec_n(stable);
    }
    let mut up = max_n - total;
    if scale_stable && spec_n(stable) < want_stable && up > 0 {
        if spec_n(stable) + up < want_stable {
            stable_n = spec_n(stable) + up;
            up = 0;
        } else {
            stable_n = want_stable;
            up -= want_stable - spec_n(stable);
        }
    }
    if new.is_some() && spec_n(new) < want_new && up > 0 {
        new_n = (spec_n(new) + up).min(want_new);
    }
    if others.iter().any(|r| int(r, "/spec/replicas") > 0) {
        return (new_n, stable_n);
    }
    let min_avail = n - unavailable;
    let increasing = new.is_none() || want_new >= spec_n(new);
    let down = for_scale_down(new, !increasing) + for_scale_down(stable, increasing);
    if down <= min_avail {
        return (new_n, stable_n);
    }
    let down = down - min_avail;
    let drain_to = |r: Rs, want: i64, cur: i64| {
        if spec_n(r) > want && r.is_some() {
            want.max(spec_n(r) - down)
        } else {
            cur
        }
    };
    if !increasing {
        new_n = drain_to(new, want_new, new_n);
        (new_n, stable_n) = adjust(new, stable, new_n, stable_n, max_n, min_avail);
    } else if scale_stable {
        stable_n = drain_to(stable, want_stable, stable_n);
        (stable_n, new_n) = adjust(stable, new, stable_n, new_n, max_n, min_avail);
    }
    (new_n, stable_n)
}

fn name_eq(a: &Value, b: &Value) -> bool {
    meta_str(a, "name") == meta_str(b, "name")
}

/// `CalculateReplicaCountsForTrafficRoutedCanary` (no dynamic stable scaling): (new, stable).
fn routed_counts(ro: &Value) -> (i64, i64) {
    let n = replicas(ro);
    let (explicit, weight) = canary_replicas_or_weight(ro);
    let canary = explicit.unwrap_or_else(|| {
        let c = (weight * n + max_weight(ro) - 1) / max_weight(ro).max(1);
        let min = ro
            .pointer("/spec/strategy/canary/minPodsPerReplicaSet")
            .and_then(Value::as_i64)
            .map(|m| m.min(n));
        match min {
            Some(m) if c != 0 => c.max(m),
            _ => c,
        }
    });
    (canary, n)
}

fn counts(ctx: &Ctx) -> (i64, i64) {
    if spec::is_blue_green(&ctx.ro) {
        let n = replicas(&ctx.ro);
        (n, n)
    } else if traffic_routed(&ctx.ro) {
        routed_counts(&ctx.ro)
    } else {
        basic_counts(
            &ctx.ro,
            ctx.new_rs.as_ref(),
            ctx.stable_rs.as_ref(),
            &ctx.others,
        )
    }
}

/// `AtDesiredReplicaCountsForCanary`.
fn at_desired(ctx: &Ctx) -> bool {
    let (want_new, want_stable) = counts(ctx);
    let new = ctx.new_rs.as_ref();
    if !new.is_some_and(|r| int(r, "/spec/replicas") == want_new && avail(Some(r)) == want_new) {
        return false;
    }
    let stable_ok = ctx.stable_rs.as_ref().is_some_and(|r| {
        int(r, "/spec/replicas") == want_stable && int(r, "/status/replicas") == want_stable
    });
    if !stable_ok {
        return false;
    }
    traffic_routed(&ctx.ro) || ctx.others.iter().map(|r| avail(Some(r))).sum::<i64>() == 0
}

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
/// `spec.rollbackWindow.revisions` ReplicaSets in between.
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
    let sel = crate::sandbox::selectors::format_selector_object(&sel);
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

/// `shouldDelayScaleDownOnAbort` (not for a basic canary).
pub fn delay_abort_scale_down(ctx: &Ctx) -> bool {
    ctx.pause.is_aborted(&ctx.ro)
        && ctx.stable_rs.is_some()
        && (traffic_routed(&ctx.ro) || spec::is_blue_green(&ctx.ro))
        && abort_scale_down_delay(&ctx.ro).is_some()
}

/// `reconcileNewReplicaSet`: returns whether it scaled.
pub fn reconcile_new(ctx: &mut Ctx) -> Result<bool, String> {
    let Some(new) = ctx.new_rs.clone() else {
        return Ok(false);
    };
    let mut want = counts(ctx).0;
    let delay = delay_abort_scale_down(ctx);
    if delay {
        match deadline_remaining(&new) {
            Some(left) if !left.is_zero() => {
                ctx.wake_in(left);
                rs::scale(
                    ctx.store,
                    &ctx.rsdef,
                    &ctx.ro,
                    &new,
                    int(&new, "/spec/replicas"),
                    true,
                )?;
                return Ok(false);
            }
            Some(_) => want = 0,
            None => {
                let stable_avail = ctx.stable_rs.as_ref().map(|r| avail(Some(r))).unwrap_or(0);
                if stable_avail >= replicas(&ctx.ro) {
                    let after = abort_scale_down_delay(&ctx.ro).unwrap_or_default();
                    rs::set_deadline(ctx.store, &ctx.rsdef, &new, Some(after))?;
                    ctx.wake_in(after);
                }
                return Ok(false);
            }
        }
    }
    rs::scale(ctx.store, &ctx.rsdef, &ctx.ro, &new, want, delay)
}

/// `isReplicaSetReferenced`: still selected by the Rollout's status or Services.
pub fn referenced(ctx: &Ctx, r: &Value) -> bool {
    let h = hash_of(r);
    if h.is_empty() {
        return false;
    }
    let ro = &ctx.ro;
    let mut refs = vec![
        text(ro, "/status/stableRS"),
        text(ro, "/status/currentPodHash"),
        text(ro, "/status/canary/weights/canary/podTemplateHash"),
        text(ro, "/status/canary/weights/stable/podTemplateHash"),
        text(ro, "/status/blueGreen/activeSelector"),
        text(ro, "/status/blueGreen/previewSelector"),
    ];
    let svc_hashes = rollout_svc::selector_hashes(ctx);
    refs.extend(svc_hashes.iter().map(String::as_str));
    refs.contains(&h)
}

/// `scaleDownOldReplicaSetsForCanary`: returns whether it scaled.
fn scale_down_others(ctx: &mut Ctx) -> Result<bool, String> {
    let others: Vec<Value> = ctx
        .others
        .iter()
        .filter(|r| int(r, "/spec/replicas") > 0)
        .cloned()
        .collect();
    if others.is_empty() {
        return Ok(false);
    }
    let mut total = 0;
    for r in &others {
        let (s, a) = (int(r, "/spec/replicas"), avail(Some(r)));
        if s != a && a < s {
            rs::scale(ctx.store, &ctx.rsdef, &ctx.ro, r, a, false)?;
            total += s - a;
        }
    }
    let (_, unavailable) = surge_and_unavailable(&ctx.ro);
    let available: i64 = ctx.all.iter().map(|r| avail(Some(r))).sum();
    let mut budget = available - (replicas(&ctx.ro) - unavailable);
    if budget <= 0 {
        return Ok(total > 0);
    }
    let mut sorted = others;
    sorted.sort_by_key(|r| std::cmp::Reverse(revision_of(r)));
    let routed = traffic_routed(&ctx.ro);
    let promoted = text(&ctx.ro, "/status/stableRS") == text(&ctx.ro, "/status/currentPodHash");
    let limit = ctx
        .ro
        .pointer("/spec/strategy/canary/scaleDownDelayRevisionLimit")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    let mut annotated = 0;
    for r in &sorted {
        if routed && referenced(ctx, r) {
            continue;
        }
        if budget <= 0 {
            break;
        }
        let s = int(r, "/spec/replicas");
        let mut want = 0;
        if !routed {
            if s > budget {
                want = s - budget;
            }
        } else if promoted || deadline_remaining(r).is_some() {
            want = delay_helper(ctx, r, &mut annotated, limit)?;
        }
        if s == want {
            continue;
        }
        rs::scale(ctx.store, &ctx.rsdef, &ctx.ro, r, want, false)?;
        budget -= s - want;
        total += s - want;
    }
    Ok(total > 0)
}

/// `scaleDownDelayHelper`: the replicas an old ReplicaSet keeps during `scaleDownDelaySeconds`.
pub fn delay_helper(
    ctx: &mut Ctx,
    r: &Value,
    annotated: &mut i64,
    limit: i64,
) -> Result<i64, String> {
    let s = int(r, "/spec/replicas");
    match deadline_remaining(r) {
        None if s > 0 && *annotated < limit => {
            *annotated += 1;
            let d = spec::scale_down_delay(&ctx.ro);
            rs::set_deadline(ctx.store, &ctx.rsdef, r, (!d.is_zero()).then_some(d))?;
            ctx.wake_in(d);
            Ok(s)
        }
        Some(left) => {
            *annotated += 1;
            if *annotated > limit || left.is_zero() {
                return Ok(0);
            }
            ctx.wake_in(left);
            Ok(replicas(&ctx.ro))
        }
        None => Ok(0),
    }
}

/// `reconcileCanaryReplicaSets`: returns whether anything was scaled.
fn reconcile_replicasets(ctx: &mut Ctx) -> Result<bool, String> {
    if flag(&ctx.ro, "/spec/paused") {
        return Ok(false);
    }
    let delay = delay_abort_scale_down(ctx);
    let mut clear: Vec<Value> = ctx.stable_rs.iter().cloned().collect();
    if let Some(new) = ctx.new_rs.clone().filter(|_| !delay) {
        clear.push(new);
    }
    for r in clear.iter().filter(|r| deadline_remaining(r).is_some()) {
        rs::set_deadline(ctx.store, &ctx.rsdef, r, None)?;
    }
    ctx.refresh()?;
    let distinct = match (&ctx.stable_rs, &ctx.new_rs) {
        (Some(s), Some(n)) => !name_eq(s, n),
        (Some(_), None) => true,
        _ => false,
    };
    if let Some(stable) = ctx.stable_rs.clone().filter(|_| distinct) {
        let want = counts(ctx).1;
        if rs::scale(ctx.store, &ctx.rsdef, &ctx.ro, &stable, want, false)? {
            return Ok(true);
        }
    }
    if reconcile_new(ctx)? {
        return Ok(true);
    }
    scale_down_others(ctx)
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

/// `reconcileTrafficRouting` (status weights only; no traffic router is driven).
fn traffic(ctx: &mut Ctx) {
    if !traffic_routed(&ctx.ro) {
        ctx.weights = None;
        return;
    }
    let ro = &ctx.ro;
    let (_, idx) = current_step(ro);
    let max = max_weight(ro);
    let new_avail = ctx.new_rs.as_ref().map(|r| avail(Some(r))).unwrap_or(0);
    let promoted = text(ro, "/status/stableRS") == text(ro, "/status/currentPodHash");
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
        return;
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
}

/// `rolloutCanary`.
pub fn sync(ctx: &mut Ctx) -> Result<(), String> {
    if changed(ctx) {
        return sync_status(ctx);
    }
    let others = ctx.others.clone();
    rs::cleanup(ctx.store, &ctx.rsdef, &ctx.ro, &others);
    rollout_svc::canary_services(ctx)?;
    traffic(ctx);
    let scaled = reconcile_replicasets(ctx)?;
    ctx.refresh()?;
    if scaled {
        return sync_status(ctx);
    }
    reconcile_pause(ctx);
    sync_status(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximations_match_the_upstream_table() {
        // From argo-rollouts' TestApproximateWeightedNewStableReplicaCounts.
        assert_eq!(approximate(1, 10, 100, 0), (0, 1));
        assert_eq!(approximate(1, 50, 100, 0), (1, 0));
        assert_eq!(approximate(3, 33, 100, 1), (1, 2));
        assert_eq!(approximate(3, 50, 100, 0), (2, 1));
        assert_eq!(approximate(5, 20, 100, 1), (1, 4));
        assert_eq!(approximate(10, 50, 100, 1), (5, 5));
        assert_eq!(approximate(4, 100, 100, 1), (4, 0));
    }

    #[test]
    fn basic_canary_scales_within_surge() {
        let ro = json!({"spec": {"replicas": 4, "strategy": {"canary": {"steps": [{"setWeight": 50}]}}},
            "status": {"stableRS": "s", "currentPodHash": "n", "currentStepIndex": 0}});
        let stable = json!({"metadata": {"name": "s"}, "spec": {"replicas": 4}, "status": {"availableReplicas": 4}});
        let new = json!({"metadata": {"name": "n"}, "spec": {"replicas": 0}, "status": {}});
        // Surge 1: one canary first, stable kept until it is available.
        assert_eq!(basic_counts(&ro, Some(&new), Some(&stable), &[]), (1, 3));
    }
}
