//! The blue-green strategy, minimal, after argo-rollouts' `rollout/bluegreen.go`: the new
//! ReplicaSet is scaled to full size and put behind `previewService`; once its pods are
//! available the Rollout pauses (`BlueGreenPause`) if `autoPromotionEnabled: false` or
//! `autoPromotionSeconds` is set, and after promotion (auto, `promote`, `promoteFull`)
//! `activeService` is switched to it, it becomes stable, and the old ReplicaSet is scaled
//! down after `scaleDownDelaySeconds` (default 30). An abort switches the active Service
//! back to stable and scales the preview ReplicaSet down after
//! `abortScaleDownDelaySeconds`. Not simulated: previewReplicaCount, analysis, anti-affinity.

use serde_json::{Value, json};

use super::rollout::Ctx;
use super::rollout_canary::{self as canary, fast_rollback};
use super::rollout_replicas::{delay_abort_scale_down, delay_helper, reconcile_new, referenced};
use super::rollout_rs::{self as rs, deadline_remaining, hash_of, revision_of};
use super::rollout_spec::{flag, int, replicas, text};
use super::rollout_status::{self as status, BLUE_GREEN_PAUSE};
use super::rollout_svc::{self as svc, get, selector_of};
use crate::selectors::format_selector_object;

fn bg<'a>(ctx: &'a Ctx, field: &str) -> &'a str {
    text(&ctx.ro, &format!("/spec/strategy/blueGreen/{field}"))
}

/// `ReadyForPause`: the new ReplicaSet has all its replicas, available.
fn ready(ctx: &Ctx) -> bool {
    let n = replicas(&ctx.ro);
    ctx.new_rs
        .as_ref()
        .is_some_and(|r| int(r, "/spec/replicas") == n && int(r, "/status/availableReplicas") == n)
}

fn pause_cond(ctx: &Ctx) -> Option<Value> {
    ctx.ro
        .pointer("/status/pauseConditions")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|c| text(c, "/reason") == BLUE_GREEN_PAUSE))
        .cloned()
}

fn auto_promotion(ctx: &Ctx) -> bool {
    ctx.ro
        .pointer("/spec/strategy/blueGreen/autoPromotionEnabled")
        .and_then(Value::as_bool)
        != Some(false)
}

/// `CompletedBlueGreenPause`.
fn completed_pause(ctx: &mut Ctx) -> bool {
    if !ctx.pause.add.is_empty() {
        return false;
    }
    if flag(&ctx.ro, "/status/blueGreen/scaleUpPreviewCheckPoint") {
        return true;
    }
    let cond = pause_cond(ctx);
    if auto_promotion(ctx) {
        let secs = int(&ctx.ro, "/spec/strategy/blueGreen/autoPromotionSeconds");
        if secs == 0 {
            return true;
        }
        let Some(start) = cond.and_then(|c| text(&c, "/startTime").parse::<jiff::Timestamp>().ok())
        else {
            return false;
        };
        let end = start
            .as_millisecond()
            .saturating_add(secs.clamp(0, i64::from(i32::MAX)) * 1000);
        let left = end - jiff::Timestamp::now().as_millisecond();
        if left >= 0 {
            ctx.wake_in(std::time::Duration::from_millis(left as u64 + 1));
        }
        return left < 0;
    }
    flag(&ctx.ro, "/status/controllerPause") && cond.is_none()
}

/// `isBlueGreenFastTracked`.
fn fast_tracked(ctx: &Ctx, active: &str) -> bool {
    let new = ctx.new_rs.as_ref().map(hash_of).unwrap_or_default();
    fast_rollback(ctx) || flag(&ctx.ro, "/status/promoteFull") || active.is_empty() || active == new
}

/// `reconcileBlueGreenPause`.
fn reconcile_pause(ctx: &mut Ctx, active: &str) {
    if flag(&ctx.ro, "/status/abort") || !ready(ctx) || flag(&ctx.ro, "/spec/paused") {
        return;
    }
    let needs_pause =
        !auto_promotion(ctx) || int(&ctx.ro, "/spec/strategy/blueGreen/autoPromotionSeconds") > 0;
    if fast_tracked(ctx, active) || !needs_pause {
        ctx.pause.remove.push(BLUE_GREEN_PAUSE);
        return;
    }
    if pause_cond(ctx).is_some() {
        if completed_pause(ctx) {
            ctx.pause.remove.push(BLUE_GREEN_PAUSE);
        }
    } else if !flag(&ctx.ro, "/status/controllerPause") {
        ctx.pause.add.push(BLUE_GREEN_PAUSE);
    }
}

/// `reconcileActiveService`.
fn reconcile_active(ctx: &mut Ctx, active: &str) -> Result<(), String> {
    let name = bg(ctx, "activeService").to_string();
    if flag(&ctx.ro, "/spec/paused") || !ready(ctx) {
        return Ok(());
    }
    let desired_ann = ctx.new_rs.as_ref().map(|r| {
        text(
            r,
            &format!(
                "/metadata/annotations/{}",
                super::rollout_spec::DESIRED_REPLICAS.replace('/', "~1")
            ),
        )
        .to_string()
    });
    if desired_ann != Some(replicas(&ctx.ro).to_string()) {
        return Ok(());
    }
    let new = ctx
        .new_rs
        .as_ref()
        .map(|r| hash_of(r).to_string())
        .unwrap_or_default();
    let mut hash = active.to_string();
    if fast_tracked(ctx, active) || completed_pause(ctx) {
        hash = new;
    }
    if flag(&ctx.ro, "/status/abort") {
        hash = text(&ctx.ro, "/status/stableRS").to_string();
    }
    if hash.is_empty() {
        return Ok(());
    }
    svc::switch(ctx, &name, &hash)
}

/// `scaleDownOldReplicaSetsForBlueGreen`.
fn scale_down_others(ctx: &mut Ctx) -> Result<(), String> {
    let mut others = ctx.others.clone();
    others.sort_by_key(|r| std::cmp::Reverse(revision_of(r)));
    let limit = ctx
        .ro
        .pointer("/spec/strategy/blueGreen/scaleDownDelayRevisionLimit")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    let mut annotated = 0;
    for r in &others {
        if referenced(ctx, r) || int(r, "/spec/replicas") == 0 {
            continue;
        }
        let want = delay_helper(ctx, r, &mut annotated, limit)?;
        if want != int(r, "/spec/replicas") {
            rs::scale(ctx.store, &ctx.rsdef, &ctx.ro, r, want, false)?;
        }
    }
    Ok(())
}

/// `syncRolloutStatusBlueGreen`.
fn sync_status(ctx: &mut Ctx, changed: bool) -> Result<(), String> {
    let mut st = status::base(ctx);
    status::put(
        &mut st,
        "stableRS",
        json!(text(&ctx.ro, "/status/stableRS")),
    );
    if changed {
        ctx.pause.clear = true;
        ctx.pause.remove_abort = true;
        st.remove("promoteFull");
    }
    if flag(&ctx.ro, "/status/promoteFull") || canary::rollback_within_window(ctx) {
        ctx.pause.clear = true;
        ctx.pause.remove_abort = true;
    }
    let preview = selector_of(get(ctx, bg(ctx, "previewService")).as_ref());
    let active = selector_of(get(ctx, bg(ctx, "activeService")).as_ref());
    let mut b = serde_json::Map::new();
    status::put(&mut b, "previewSelector", json!(preview));
    status::put(&mut b, "activeSelector", json!(active));
    st.insert("blueGreen".into(), json!(b));
    let current = text(&Value::Object(st.clone()), "/currentPodHash").to_string();
    let reason = if ctx.stable_rs.is_none() || active.is_empty() {
        Some("Initial deploy")
    } else if active != current {
        None
    } else if flag(&ctx.ro, "/status/promoteFull") {
        Some("Full promotion requested")
    } else if fast_rollback(ctx) {
        Some("Fast rollback")
    } else if ctx.pause.is_aborted(&ctx.ro) {
        None
    } else {
        Some("Completed blue-green update")
    };
    if let Some(reason) = reason {
        canary::promote(ctx, &mut st, reason);
    }
    let active_rs = ctx
        .all
        .iter()
        .find(|r| !active.is_empty() && hash_of(r) == active);
    let sum = |p: &str| ctx.all.iter().map(|r| int(r, p)).sum::<i64>();
    let (hpa, sel, avail, ready_n) = match active_rs {
        Some(r) => (
            int(r, "/status/replicas"),
            format_selector_object(r.pointer("/spec/selector").unwrap_or(&Value::Null)),
            int(r, "/status/availableReplicas"),
            int(r, "/status/readyReplicas"),
        ),
        None => (
            sum("/status/replicas"),
            format_selector_object(ctx.ro.pointer("/spec/selector").unwrap_or(&Value::Null)),
            sum("/status/availableReplicas"),
            sum("/status/readyReplicas"),
        ),
    };
    status::put(&mut st, "HPAReplicas", json!(hpa));
    status::put(&mut st, "selector", json!(sel));
    status::put(&mut st, "availableReplicas", json!(avail));
    status::put(&mut st, "readyReplicas", json!(ready_n));
    status::persist(ctx, st)
}

/// `rolloutBlueGreen`.
pub fn sync(ctx: &mut Ctx) -> Result<(), String> {
    let new_hash = ctx
        .new_rs
        .as_ref()
        .map(|r| hash_of(r).to_string())
        .unwrap_or_default();
    if !flag(&ctx.ro, "/spec/paused") {
        let preview = bg(ctx, "previewService").to_string();
        if !preview.is_empty() && !new_hash.is_empty() {
            svc::switch(ctx, &preview, &new_hash)?;
        }
    }
    let cur = text(&ctx.ro, "/status/currentPodHash");
    if !cur.is_empty() && cur != new_hash {
        return sync_status(ctx, true);
    }
    let delay = delay_abort_scale_down(ctx);
    let mut clear: Vec<Value> = ctx.stable_rs.iter().cloned().collect();
    clear.extend(ctx.new_rs.iter().filter(|_| !delay).cloned());
    for r in clear.iter().filter(|r| deadline_remaining(r).is_some()) {
        rs::set_deadline(ctx.store, &ctx.rsdef, r, None)?;
    }
    ctx.refresh()?;
    if let Some(stable) = ctx.stable_rs.clone() {
        rs::scale(
            ctx.store,
            &ctx.rsdef,
            &ctx.ro,
            &stable,
            replicas(&ctx.ro),
            false,
        )?;
    }
    reconcile_new(ctx)?;
    ctx.refresh()?;
    scale_down_others(ctx)?;
    let others = ctx.others.clone();
    rs::cleanup(ctx.store, &ctx.rsdef, &ctx.ro, &others);
    ctx.refresh()?;
    let active = selector_of(get(ctx, bg(ctx, "activeService")).as_ref());
    reconcile_pause(ctx, &active);
    reconcile_active(ctx, &active)?;
    sync_status(ctx, false)
}
