//! The status an Argo Rollout controller publishes (`persistRolloutStatus`): the counts every
//! strategy starts from, the pause/abort bookkeeping (`rollout/pause.go`), the Paused /
//! Progressing conditions on pause, resume and retry (`checkPausedConditions`), then the
//! conditions and phase of `rollout_conditions.rs`, and the write itself: like the real
//! controller, a JSON merge patch of the difference between the status it read and the one
//! it computed, sent to `/status`, so fields written meanwhile by others (`abort`,
//! `pauseConditions` cleared by a promote) survive unless the controller changed them too.

use serde_json::{Map, Value, json};

use super::rollout::Ctx;
use super::rollout_conditions as conditions;
use super::rollout_rs::{event, hash_of};
use super::rollout_spec::{WORKLOAD_GENERATION, flag, int, text};
use crate::store::{meta_str, now_rfc3339};
use crate::writes::Part;

pub const CANARY_PAUSE: &str = "CanaryPauseStep";
pub const BLUE_GREEN_PAUSE: &str = "BlueGreenPause";

/// What a reconcile decided about pausing and aborting (`pauseContext`).
#[derive(Default)]
pub struct PauseCtx {
    pub add: Vec<&'static str>,
    pub remove: Vec<&'static str>,
    pub clear: bool,
    pub add_abort: bool,
    pub remove_abort: bool,
    /// Why the controller aborts (a progress deadline), appended to the abort message.
    pub abort_message: Option<String>,
}

impl PauseCtx {
    pub fn is_aborted(&self, ro: &Value) -> bool {
        !self.remove_abort && (self.add_abort || flag(ro, "/status/abort"))
    }
}

/// Set `key` unless it is Go's zero value (the status fields are all `omitempty`).
pub fn put(st: &mut Map<String, Value>, key: &str, v: Value) {
    let zero = match &v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    if zero {
        st.remove(key);
    } else {
        st.insert(key.to_string(), v);
    }
}

/// `CalculatePauseStatus`: abort fields, then pause conditions and `controllerPause`.
fn calculate_pause(ctx: &Ctx, st: &mut Map<String, Value>) {
    let ro = &ctx.ro;
    if ctx.pause.is_aborted(ro) {
        st.insert("abort".into(), json!(true));
        let at = ro
            .pointer("/status/abortedAt")
            .cloned()
            .unwrap_or_else(|| json!(now_rfc3339()));
        st.insert("abortedAt".into(), at);
        return;
    }
    st.remove("abort");
    st.remove("abortedAt");
    if ctx.pause.clear {
        return;
    }
    let mut controller_pause = flag(ro, "/status/controllerPause");
    let existing = ro
        .pointer("/status/pauseConditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = existing
        .iter()
        .filter(|c| !ctx.pause.remove.contains(&text(c, "/reason")))
        .cloned()
        .collect();
    for reason in &ctx.pause.add {
        if !existing.iter().any(|c| text(c, "/reason") == *reason) {
            conds.push(json!({"reason": reason, "startTime": now_rfc3339()}));
            controller_pause = true;
        }
    }
    if conds.is_empty() {
        return;
    }
    put(st, "controllerPause", json!(controller_pause));
    put(st, "pauseConditions", json!(conds));
}

/// Two-way JSON merge patch from `old` to `new` (what `CreateTwoWayMergePatch` gives for
/// the status, whose lists have no merge keys).
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut p = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        if let Some(d) = diff(ov, nv) {
                            p.insert(k.clone(), d);
                        }
                    }
                    _ => {
                        p.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                p.insert(k.clone(), Value::Null);
            }
            (!p.is_empty()).then_some(Value::Object(p))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

/// Write `st` as the status: a merge patch of its difference from the stored status.
pub fn write(ctx: &mut Ctx, st: Map<String, Value>) -> Result<(), String> {
    let old = ctx.stored.clone();
    let new = Value::Object(st);
    let Some(patch) = diff(&old, &new) else {
        return Ok(());
    };
    let ns = meta_str(&ctx.ro, "namespace")
        .unwrap_or("default")
        .to_string();
    let name = meta_str(&ctx.ro, "name").unwrap_or_default().to_string();
    let written = ctx
        .store
        .modify(&ctx.rodef, Some(&ns), &name, Part::Status, false, |cur| {
            let mut n = cur.clone();
            if !n.get("status").is_some_and(Value::is_object) {
                n["status"] = json!({});
            }
            json_patch::merge(&mut n["status"], &patch);
            Ok(n)
        })
        .map_err(|e| e.to_string())?;
    let was_paused = old.get("pauseConditions").is_some();
    let paused = new.get("pauseConditions").is_some();
    if was_paused != paused {
        if paused {
            let reason = text(&new, "/pauseConditions/0/reason");
            event(
                ctx.store,
                &ctx.ro,
                "Normal",
                "RolloutPaused",
                &format!("Rollout is paused ({reason})"),
            );
        } else if new.get("abortedAt").is_none() {
            event(
                ctx.store,
                &ctx.ro,
                "Normal",
                "RolloutResumed",
                "Rollout is resumed",
            );
        }
    }
    ctx.stored = written.get("status").cloned().unwrap_or(json!({}));
    Ok(())
}

/// `persistRolloutStatus`: observed generation, a progress-deadline abort, pause and abort
/// fields, conditions, phase, and a wake-up at the progress deadline.
pub fn persist(ctx: &mut Ctx, mut st: Map<String, Value>) -> Result<(), String> {
    let ro = &ctx.ro;
    st.insert(
        "observedGeneration".into(),
        json!(int(ro, "/metadata/generation").to_string()),
    );
    if ro.pointer("/spec/workloadRef").is_some() {
        let g = text(
            ro,
            &format!(
                "/metadata/annotations/{}",
                WORKLOAD_GENERATION.replace('/', "~1")
            ),
        );
        put(&mut st, "workloadObservedGeneration", json!(g));
    } else {
        st.remove("workloadObservedGeneration");
    }
    conditions::evaluate_deadline_abort(ctx, &st);
    calculate_pause(ctx, &mut st);
    conditions::calculate_conditions(ctx, &mut st);
    let (p, m) = conditions::phase(&ctx.ro, &Value::Object(st.clone()));
    put(&mut st, "phase", json!(p));
    put(&mut st, "message", json!(m));
    conditions::requeue_stuck(ctx, &st);
    write(ctx, st)
}

/// `patchCondition`: the stored status with conditions set, observed generation and
/// phase recomputed.
pub fn patch_conditions(ctx: &mut Ctx, set: Vec<Value>) -> Result<(), String> {
    let mut st = ctx.stored.as_object().cloned().unwrap_or_default();
    let mut conds = conditions::conditions_of(&ctx.stored);
    for c in set {
        conditions::set_condition(&mut conds, c);
    }
    put(&mut st, "conditions", json!(conds));
    st.insert(
        "observedGeneration".into(),
        json!(int(&ctx.ro, "/metadata/generation").to_string()),
    );
    let (p, m) = conditions::phase(&ctx.ro, &Value::Object(st.clone()));
    put(&mut st, "phase", json!(p));
    put(&mut st, "message", json!(m));
    write(ctx, st)
}

/// `checkPausedConditions`: the Paused and Progressing (RolloutPaused / RolloutResumed /
/// RolloutRetry) conditions. Returns true if it wrote (the reconcile then stops there).
pub fn check_paused(ctx: &mut Ctx) -> Result<bool, String> {
    let ro = &ctx.ro;
    if text(ro, "/status/observedGeneration") != int(ro, "/metadata/generation").to_string() {
        return Ok(false);
    }
    let conds = conditions::conditions_of(&ctx.stored);
    let prog = conditions::get_condition(&conds, "Progressing");
    let prog_paused = prog.is_some_and(|c| text(c, "/reason") == "RolloutPaused");
    let abort_cond = prog.is_some_and(|c| text(c, "/reason") == "RolloutAborted");
    let paused = ctx.stored.get("pauseConditions").is_some() || flag(ro, "/spec/paused");
    let stable = text(&ctx.stored, "/stableRS");
    let completed = !stable.is_empty() && stable == text(&ctx.stored, "/currentPodHash");
    let mut set = Vec::new();
    if paused != prog_paused && !abort_cond && !completed {
        set.push(if paused {
            conditions::new_condition(
                "Progressing",
                "Unknown",
                "RolloutPaused",
                "Rollout is paused",
            )
        } else {
            conditions::new_condition(
                "Progressing",
                "Unknown",
                "RolloutResumed",
                "Rollout is resumed",
            )
        });
    }
    if !flag(ro, "/status/abort") && abort_cond {
        set.push(conditions::new_condition(
            "Progressing",
            "Unknown",
            "RolloutRetry",
            "Retrying Rollout after abort",
        ));
    }
    let paused_true =
        conditions::get_condition(&conds, "Paused").is_some_and(|c| text(c, "/status") == "True");
    if paused != paused_true && !abort_cond {
        let s = if paused { "True" } else { "False" };
        set.push(conditions::new_condition(
            "Paused",
            s,
            "RolloutPaused",
            "Rollout is paused",
        ));
    }
    if set.is_empty() {
        return Ok(false);
    }
    patch_conditions(ctx, set)?;
    Ok(true)
}

/// `calculateBaseStatus`: the counts and hashes every strategy starts from.
pub fn base(ctx: &Ctx) -> Map<String, Value> {
    let ro = &ctx.ro;
    let mut st = Map::new();
    let sum = |p: &str| ctx.all.iter().map(|rs| int(rs, p)).sum::<i64>();
    let hash = ctx
        .new_rs
        .as_ref()
        .map(|rs| hash_of(rs).to_string())
        .unwrap_or_default();
    put(&mut st, "currentPodHash", json!(hash));
    put(&mut st, "replicas", json!(sum("/status/replicas")));
    let updated = ctx
        .new_rs
        .as_ref()
        .map(|rs| int(rs, "/status/replicas"))
        .unwrap_or(0);
    put(&mut st, "updatedReplicas", json!(updated));
    put(
        &mut st,
        "readyReplicas",
        json!(sum("/status/readyReplicas")),
    );
    if let Some(c) = ro.pointer("/status/collisionCount") {
        st.insert("collisionCount".into(), c.clone());
    }
    put(
        &mut st,
        "conditions",
        json!(conditions::conditions_of(
            ro.get("status").unwrap_or(&Value::Null)
        )),
    );
    put(
        &mut st,
        "promoteFull",
        json!(flag(ro, "/status/promoteFull")),
    );
    st.insert("canary".into(), json!({}));
    st.insert("blueGreen".into(), json!({}));
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_sets_and_deletes() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let new = json!({"a": 1, "b": {"c": 2}, "e": [2], "f": "x"});
        assert_eq!(
            diff(&old, &new),
            Some(json!({"b": {"d": null}, "e": [2], "f": "x"}))
        );
        assert_eq!(diff(&new, &new), None);
    }
}
