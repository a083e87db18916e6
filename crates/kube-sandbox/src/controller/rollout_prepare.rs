//! What a Rollout reconcile does before its strategy (argo-rollouts' `newRolloutContext`,
//! `rollout/templateref.go`, `createDesiredReplicaSet`, `syncReplicaSetRevision`): resolve
//! `spec.workloadRef`, report an invalid spec (`InvalidSpec` condition), create the new
//! ReplicaSet or raise the revision of a reused one, and keep the Rollout's
//! `rollout.argoproj.io/revision` annotation in step.

use serde_json::{Value, json};

use super::objects::{ensure_map, name_of};
use super::rollout::Ctx;
use super::rollout_conditions as conditions;
use super::rollout_rs::{self as rs, revision_of, rollout_owner_uid};
use super::rollout_spec::{self as spec, REVISION, WORKLOAD_GENERATION, int, text};
use super::rollout_status::{self as status};
use crate::store::meta_str;
use crate::writes::Part;

/// `createInvalidRolloutCondition`: an `InvalidSpec` condition (phase Degraded).
pub fn invalid(ctx: &mut Ctx, err: &str) -> Result<(), String> {
    let name = meta_str(&ctx.ro, "name").unwrap_or_default();
    let msg = format!("The Rollout \"{name}\" is invalid: {err}");
    let mut conds = conditions::conditions_of(&ctx.stored);
    let prev = conditions::get_condition(&conds, "InvalidSpec").cloned();
    let observed = text(&ctx.stored, "/observedGeneration")
        == int(&ctx.ro, "/metadata/generation").to_string();
    if prev.as_ref().is_some_and(|c| text(c, "/message") == msg) && observed {
        return Ok(());
    }
    conditions::remove_condition(&mut conds, "InvalidSpec");
    conds.push(conditions::new_condition(
        "InvalidSpec",
        "True",
        "InvalidSpec",
        &msg,
    ));
    let mut st = ctx.stored.as_object().cloned().unwrap_or_default();
    status::put(&mut st, "conditions", json!(conds));
    st.insert(
        "observedGeneration".into(),
        json!(int(&ctx.ro, "/metadata/generation").to_string()),
    );
    let (p, m) = conditions::phase(&ctx.ro, &Value::Object(st.clone()));
    status::put(&mut st, "phase", json!(p));
    status::put(&mut st, "message", json!(m));
    status::write(ctx, st)
}

/// Write to the Rollout's metadata (annotations), keeping the in-memory copy in step.
pub fn annotate(ctx: &mut Ctx, key: &str, value: &str) -> Result<bool, String> {
    let cur = text(
        &ctx.ro,
        &format!("/metadata/annotations/{}", key.replace('/', "~1")),
    );
    if cur == value {
        return Ok(false);
    }
    let (ns, name) = (ctx.ns(), name_of(&ctx.ro));
    ctx.store
        .modify(&ctx.rodef, Some(&ns), &name, Part::Main, false, |cur| {
            let mut n = cur.clone();
            ensure_map(&mut n, "annotations").insert(key.into(), json!(value));
            Ok(n)
        })
        .map_err(|e| e.to_string())?;
    ensure_map(&mut ctx.ro, "annotations").insert(key.into(), json!(value));
    Ok(true)
}

/// Resolve `spec.workloadRef` into `spec.template` / `spec.selector` (in memory only).
pub fn resolve_workload(ctx: &mut Ctx) -> Result<Result<(), String>, String> {
    let Some(wr) = ctx.ro.pointer("/spec/workloadRef").cloned() else {
        return Ok(Ok(()));
    };
    let (api, kind, name) = (
        text(&wr, "/apiVersion"),
        text(&wr, "/kind"),
        text(&wr, "/name"),
    );
    let group = api.split_once('/').map(|(g, _)| g).unwrap_or_default();
    if kind != "Deployment" || group != "apps" {
        return Ok(Err(format!(
            "workload of type {group}/{kind} is not supported"
        )));
    }
    let template_set = ctx
        .ro
        .pointer("/spec/template")
        .is_some_and(|t| t.as_object().is_some_and(|m| !m.is_empty()));
    if template_set {
        return Ok(Err(
            "spec.template: Internal error: template must be empty for workload reference rollout"
                .into(),
        ));
    }
    let Some(ddef) = ctx
        .store
        .registry
        .find("apps", "v1", "deployments")
        .cloned()
    else {
        return Ok(Err(format!("deployments.apps \"{name}\" not found")));
    };
    let Ok(dep) = ctx.store.get(&ddef, Some(&ctx.ns()), name) else {
        return Ok(Err(format!("deployments.apps \"{name}\" not found")));
    };
    let generation = int(&dep, "/metadata/generation").to_string();
    annotate(ctx, WORKLOAD_GENERATION, &generation)?;
    ctx.ro["spec"]["template"] = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if !ctx
        .ro
        .pointer("/spec/selector")
        .is_some_and(Value::is_object)
    {
        ctx.ro["spec"]["selector"] = dep
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
    }
    Ok(Ok(()))
}

/// `getReferencedServices`: a missing Service is a validation error.
pub fn referenced_services(ctx: &Ctx) -> Result<(), String> {
    let Some(svcdef) = ctx.service_def() else {
        return Ok(());
    };
    let refs = [
        ("blueGreen", "activeService"),
        ("blueGreen", "previewService"),
        ("canary", "stableService"),
        ("canary", "canaryService"),
    ];
    for (s, f) in refs {
        let name = text(&ctx.ro, &format!("/spec/strategy/{s}/{f}"));
        if !name.is_empty() && ctx.store.get(&svcdef, Some(&ctx.ns()), name).is_err() {
            return Err(format!(
                "spec.strategy.{s}.{f}: Invalid value: \"{name}\": services \"{name}\" not found"
            ));
        }
    }
    Ok(())
}

/// `createDesiredReplicaSet`. Returns false if the reconcile should stop (a hash
/// collision was recorded and will be retried).
pub fn create_new_rs(
    ctx: &mut Ctx,
    template: &Value,
    selector: &Value,
    hash: &str,
    collisions: Option<i64>,
) -> Result<bool, String> {
    let revision = ctx.all.iter().map(revision_of).max().unwrap_or(0) + 1;
    let body = rs::desired(&ctx.ro, template, selector, hash, revision);
    let name = name_of(&body);
    let ns = ctx.ns();
    match ctx.store.create(&ctx.rsdef, Some(&ns), body, false) {
        Ok(created) => {
            set_rollout_revision(ctx, revision)?;
            let msg = format!("Created ReplicaSet {name} (revision {revision})");
            rs::event(ctx.store, &ctx.ro, "Normal", "NewReplicaSetCreated", &msg);
            let msg = format!("Created new replica set \"{name}\"");
            ctx.set_condition(conditions::new_condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &msg,
            ));
            ctx.new_rs = Some(created);
            Ok(true)
        }
        Err(e) if e.reason == "AlreadyExists" => {
            let existing = ctx.store.get(&ctx.rsdef, Some(&ns), &name).ok();
            let ours = existing.as_ref().is_some_and(|r| {
                rollout_owner_uid(r) == meta_str(&ctx.ro, "uid")
                    && r.pointer("/spec/template")
                        .is_some_and(|t| spec::template_equal(t, template))
            });
            if ours {
                ctx.new_rs = existing;
                return Ok(true);
            }
            let mut st = ctx.stored.as_object().cloned().unwrap_or_default();
            st.insert("collisionCount".into(), json!(collisions.unwrap_or(0) + 1));
            status::write(ctx, st)?;
            Ok(false)
        }
        Err(e) => {
            let msg = format!("Failed to create new replica set \"{name}\": {}", e.message);
            rs::event(ctx.store, &ctx.ro, "Warning", "ReplicaSetCreateError", &msg);
            let cond =
                conditions::new_condition("Progressing", "False", "ReplicaSetCreateError", &msg);
            status::patch_conditions(ctx, vec![cond])?;
            Err(msg)
        }
    }
}

pub fn set_rollout_revision(ctx: &mut Ctx, revision: i64) -> Result<(), String> {
    if annotate(ctx, REVISION, &revision.to_string())? {
        let msg = format!("Rollout updated to revision {revision}");
        rs::event(ctx.store, &ctx.ro, "Normal", "RolloutUpdated", &msg);
    }
    Ok(())
}

/// `syncReplicaSetRevision`: the new ReplicaSet's revision becomes max(others) + 1 (a
/// rollback bumps a reused one), and the Rollout carries it.
pub fn sync_revision(ctx: &mut Ctx) -> Result<(), String> {
    let Some(new) = ctx.new_rs.clone() else {
        return Ok(());
    };
    let new_name = name_of(&new);
    let max_old = ctx
        .all
        .iter()
        .filter(|r| name_of(r) != new_name)
        .map(revision_of)
        .max()
        .unwrap_or(0);
    let synced = rs::sync_revision(ctx.store, &ctx.rsdef, &ctx.ro, &new, max_old + 1)?;
    set_rollout_revision(ctx, revision_of(&synced))?;
    let conds = conditions::conditions_of(ctx.ro.get("status").unwrap_or(&Value::Null));
    if conditions::get_condition(&conds, "Progressing").is_none() {
        let msg = format!("Found new replica set \"{new_name}\"");
        ctx.set_condition(conditions::new_condition(
            "Progressing",
            "True",
            "FoundNewReplicaSet",
            &msg,
        ));
    }
    ctx.new_rs = Some(synced);
    ctx.refresh()
}
