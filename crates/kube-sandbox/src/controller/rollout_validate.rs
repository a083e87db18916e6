//! The part of argo-rollouts' `pkg/apis/rollouts/validation` the sandbox checks before
//! reconciling a Rollout; the first error becomes an `InvalidSpec` condition
//! (`The Rollout "x" is invalid: <field error>`), worded like `field.Error.Error()`.

use serde_json::{Value, json};

use super::rollout_spec::{
    is_blue_green, is_canary, max_weight, pause_seconds, replicas, steps, text,
};
use crate::selectors::selector_from_object;

/// The validation errors that stop reconciliation (first one wins), worded like
/// `field.Error.Error()`: `spec.selector: Required value: ...`.
pub fn validate(ro: &Value, template: &Value, selector: Option<&Value>) -> Result<(), String> {
    let n = replicas(ro);
    if n < 0 {
        return Err(format!(
            "spec.replicas: Invalid value: {n}: must be greater than or equal to 0"
        ));
    }
    let workload_ref = ro
        .pointer("/spec/workloadRef")
        .is_some_and(Value::is_object);
    let sel = selector.filter(|s| s.is_object());
    match sel {
        None if !workload_ref => {
            return Err(
                "spec.selector: Required value: Rollout has missing field '.spec.selector'".into(),
            );
        }
        Some(s) if selector_from_object(s).is_none_or(|ls| ls.is_empty()) => {
            return Err(format!(
                "spec.selector: Invalid value: {s}: empty selector is invalid for deployment"
            ));
        }
        _ => {}
    }
    if let Some(s) = sel.and_then(selector_from_object)
        && !s.matches(template.pointer("/metadata/labels"))
    {
        let labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        return Err(format!(
            "spec.template.metadata.labels: Invalid value: {labels}: `selector` does not match template `labels`"
        ));
    }
    let containers = template
        .pointer("/spec/containers")
        .and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        return Err("spec.template.spec.containers: Required value".into());
    }
    // `ValidateRolloutSpec`: progressDeadlineSeconds (default 600) >= 0 and > minReadySeconds.
    let deadline = ro
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    if deadline < 0 {
        return Err(format!(
            "spec.progressDeadlineSeconds: Invalid value: {deadline}: must be greater than or equal to 0"
        ));
    }
    let min_ready = ro
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if deadline <= min_ready {
        return Err(format!(
            "spec.progressDeadlineSeconds: Invalid value: {deadline}: must be greater than minReadySeconds"
        ));
    }
    match (is_canary(ro), is_blue_green(ro)) {
        (false, false) => {
            return Err("spec.strategy.strategy: Required value: Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'".into());
        }
        (true, true) => {
            return Err("spec.strategy.strategy: Invalid value: \"blueGreen: true canary: true\": Multiple Strategies can not be listed".into());
        }
        _ => {}
    }
    if is_blue_green(ro) {
        let active = text(ro, "/spec/strategy/blueGreen/activeService");
        if active == text(ro, "/spec/strategy/blueGreen/previewService") {
            return Err(format!(
                "spec.strategy.activeService: Invalid value: \"{active}\": This rollout uses the same service for the active and preview services, but two different services are required."
            ));
        }
    }
    let max = max_weight(ro);
    for (i, s) in steps(ro).iter().enumerate() {
        let path = format!("spec.strategy.steps[{i}]");
        let known = [
            "setWeight",
            "pause",
            "experiment",
            "analysis",
            "setCanaryScale",
            "setHeaderRoute",
            "setMirrorRoute",
            "plugin",
        ];
        let set = s
            .as_object()
            .map(|m| m.keys().filter(|k| known.contains(&k.as_str())).count())
            .unwrap_or(0);
        if set != 1 {
            return Err(format!(
                "{path}: Invalid value: {s}: Step must have one of the following set: experiment, setWeight, setCanaryScale, plugin or pause"
            ));
        }
        if let Some(w) = s.get("setWeight").and_then(Value::as_i64)
            && !(0..=max).contains(&w)
        {
            return Err(format!(
                "{path}.setWeight: Invalid value: {w}: SetWeight needs to be between 0 and {max}"
            ));
        }
        if let Some(d) = pause_seconds(s)
            && d < 0
        {
            return Err(format!(
                "{path}.pause.duration: Invalid value: {d}: Duration needs to be greater than 0"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages() {
        let t = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let ro = json!({"spec": {"strategy": {"canary": {}}}});
        assert_eq!(
            validate(&ro, &t, None).unwrap_err(),
            "spec.selector: Required value: Rollout has missing field '.spec.selector'"
        );
        let sel = json!({"matchLabels": {"app": "w"}});
        assert!(validate(&ro, &t, Some(&sel)).is_ok());
        let ro = json!({"spec": {"strategy": {"canary": {"steps": [{"setWeight": 120}]}}}});
        assert!(
            validate(&ro, &t, Some(&sel))
                .unwrap_err()
                .contains("SetWeight needs")
        );
        let ro = json!({"spec": {"progressDeadlineSeconds": 5, "minReadySeconds": 5, "strategy": {"canary": {}}}});
        assert_eq!(
            validate(&ro, &t, Some(&sel)).unwrap_err(),
            "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"
        );
    }
}
