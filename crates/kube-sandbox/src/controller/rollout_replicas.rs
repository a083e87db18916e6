//! How many pods each ReplicaSet of a canary gets, and the scaling that follows
//! (argo-rollouts' `utils/replicaset/canary.go`, `rollout/canary.go`, `rollout/replicaset.go`):
//! a basic canary splits `spec.replicas` by weight (`CalculateReplicaCountsForBasicCanary`,
//! within maxSurge / maxUnavailable); a traffic-routed one runs ceil(weight × replicas / 100)
//! canary pods next to a full stable ReplicaSet. On abort the canary goes to 0, at once for a
//! basic canary, after `abortScaleDownDelaySeconds` (a `scale-down-deadline` annotation) for a
//! traffic-routed canary or blue-green; an old stable that is neither new nor stable any more
//! is kept for `scaleDownDelaySeconds` when traffic-routed.

use serde_json::Value;

use super::rollout::Ctx;
use super::rollout_rs::{self as rs, deadline_remaining, hash_of, revision_of};
use super::rollout_spec::{
    self as spec, abort_scale_down_delay, canary_replicas_or_weight, flag, int, max_weight,
    replicas, surge_and_unavailable, text, traffic_routed,
};
use super::rollout_svc;
use crate::store::meta_str;

type Rs<'a> = Option<&'a Value>;

fn spec_n(r: Rs) -> i64 {
    r.map(|r| int(r, "/spec/replicas")).unwrap_or(0)
}

pub fn avail(r: Rs) -> i64 {
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
pub fn at_desired(ctx: &Ctx) -> bool {
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
pub fn reconcile_replicasets(ctx: &mut Ctx) -> Result<bool, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
