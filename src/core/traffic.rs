//! Traffic switches rollbackd can revert: a blue/green Service selector and Istio canary weights.
//!
//! Neither keeps its previous state anywhere in the cluster, so the index notes every change of
//! an opted-in object as a [`TrafficChange`] (when, from what, to what), and the store persists
//! it. Reverting means going back to `from`: the previous selector, or 100% to the stable
//! destination and 0% to the canary, leaving every other route and match rule as it is.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::alert::LabelSet;
use super::workload::WorkloadIndex;

/// A Service opts in to selector tracking with this annotation set to "true".
pub const TRACK_SELECTOR_ANNOTATION: &str = "rollbackd.io/track-selector";
/// A VirtualService opts in to weight tracking with this annotation set to "true".
pub const TRACK_WEIGHTS_ANNOTATION: &str = "rollbackd.io/track-weights";
/// Names the stable destination of a VirtualService (`host` or `host/subset`).
pub const STABLE_ANNOTATION: &str = "rollbackd.io/stable";
/// Names the canary destination of a VirtualService (`host` or `host/subset`).
pub const CANARY_ANNOTATION: &str = "rollbackd.io/canary";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficKind {
    Service,
    VirtualService,
}

impl TrafficKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficKind::Service => "service",
            TrafficKind::VirtualService => "virtual-service",
        }
    }

    pub fn parse(s: &str) -> Option<TrafficKind> {
        match s {
            "service" => Some(TrafficKind::Service),
            "virtual-service" => Some(TrafficKind::VirtualService),
            _ => None,
        }
    }
}

/// One observed change of a tracked object's traffic state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficChange {
    pub kind: TrafficKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub at: Timestamp,
    /// The selector (Service) or destination weights (VirtualService) before and after.
    pub from: Value,
    pub to: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub selector: LabelSet,
    pub tracked: bool,
}

/// One weighted destination: `spec.http[route].route[destination]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteWeight {
    pub route: usize,
    pub destination: usize,
    /// `host`, or `host/subset`.
    pub key: String,
    /// Istio's default for a destination without a weight is 100 when it is alone, else 0.
    pub weight: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualServiceState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `networking.istio.io/v1beta1` or `/v1`, to patch it where it lives.
    pub api_version: String,
    pub resource_version: String,
    pub weights: Vec<RouteWeight>,
    pub tracked: bool,
    pub stable: Option<String>,
    pub canary: Option<String>,
}

/// The weighted destinations of `spec.http`.
pub fn route_weights(spec: &Value) -> Vec<RouteWeight> {
    let mut out = Vec::new();
    for (i, http) in spec
        .get("http")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let routes = http
            .get("route")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let alone = routes.len() == 1;
        for (j, dest) in routes.iter().enumerate() {
            let host = dest
                .pointer("/destination/host")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = match dest.pointer("/destination/subset").and_then(Value::as_str) {
                Some(subset) => format!("{host}/{subset}"),
                None => host.to_string(),
            };
            let default = if alone { 100 } else { 0 };
            let weight = dest
                .get("weight")
                .and_then(Value::as_i64)
                .unwrap_or(default);
            out.push(RouteWeight {
                route: i,
                destination: j,
                key,
                weight,
            });
        }
    }
    out
}

fn selector_value(selector: &LabelSet) -> Value {
    json!(selector)
}

impl WorkloadIndex {
    /// Indexes a Service; returns the change to persist when a tracked selector changed.
    pub fn apply_service(&mut self, svc: ServiceState, now: Timestamp) -> Option<TrafficChange> {
        let key = (svc.namespace.clone(), svc.name.clone());
        let previous = self.services.insert(key.clone(), svc.clone());
        let change = match previous {
            Some(old) if svc.tracked && old.uid == svc.uid && old.selector != svc.selector => {
                Some(TrafficChange {
                    kind: TrafficKind::Service,
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    uid: svc.uid.clone(),
                    at: now,
                    from: selector_value(&old.selector),
                    to: selector_value(&svc.selector),
                })
            }
            _ => None,
        };
        self.settle_change(
            TrafficKind::Service,
            key,
            &svc.uid,
            selector_value(&svc.selector),
            change,
        )
    }

    /// Indexes a VirtualService; returns the change to persist when tracked weights changed.
    pub fn apply_virtual_service(
        &mut self,
        vs: VirtualServiceState,
        now: Timestamp,
    ) -> Option<TrafficChange> {
        let key = (vs.namespace.clone(), vs.name.clone());
        let previous = self.virtual_services.insert(key.clone(), vs.clone());
        let change = match previous {
            Some(old) if vs.tracked && old.uid == vs.uid && old.weights != vs.weights => {
                Some(TrafficChange {
                    kind: TrafficKind::VirtualService,
                    namespace: vs.namespace.clone(),
                    name: vs.name.clone(),
                    uid: vs.uid.clone(),
                    at: now,
                    from: json!(old.weights),
                    to: json!(vs.weights),
                })
            }
            _ => None,
        };
        self.settle_change(
            TrafficKind::VirtualService,
            key,
            &vs.uid,
            json!(vs.weights),
            change,
        )
    }

    /// Keeps the last change only while it still describes the live state.
    fn settle_change(
        &mut self,
        kind: TrafficKind,
        key: (String, String),
        uid: &str,
        live: Value,
        change: Option<TrafficChange>,
    ) -> Option<TrafficChange> {
        let map_key = (kind, key);
        if let Some(change) = change {
            self.traffic_changes.insert(map_key, change.clone());
            return Some(change);
        }
        // A remembered change that no longer matches (changed while rollbackd was away, or
        // the object was recreated) says nothing about when the live state began.
        if self
            .traffic_changes
            .get(&map_key)
            .is_some_and(|c| c.to != live || c.uid != uid)
        {
            self.traffic_changes.remove(&map_key);
        }
        None
    }

    /// Restores a change read back from the store at start-up.
    pub fn restore_traffic_change(&mut self, change: TrafficChange) {
        let key = (change.kind, (change.namespace.clone(), change.name.clone()));
        self.traffic_changes.insert(key, change);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.services.remove(&key);
        self.traffic_changes.remove(&(TrafficKind::Service, key));
    }

    pub fn delete_virtual_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.virtual_services.remove(&key);
        self.traffic_changes
            .remove(&(TrafficKind::VirtualService, key));
    }

    pub fn services_in(&self, namespace: &str) -> impl Iterator<Item = &ServiceState> + '_ {
        let namespace = namespace.to_string();
        self.services
            .values()
            .filter(move |s| s.namespace == namespace)
    }

    pub fn virtual_services_in(
        &self,
        namespace: &str,
    ) -> impl Iterator<Item = &VirtualServiceState> + '_ {
        let namespace = namespace.to_string();
        self.virtual_services
            .values()
            .filter(move |v| v.namespace == namespace)
    }

    pub fn last_traffic_change(
        &self,
        kind: TrafficKind,
        namespace: &str,
        name: &str,
    ) -> Option<&TrafficChange> {
        self.traffic_changes
            .get(&(kind, (namespace.to_string(), name.to_string())))
    }
}

/// The state key rollbackd compares to tell "its own" revert from a new change.
pub fn state_key(kind: TrafficKind, uid: &str, state: &Value) -> String {
    format!("{}:{uid}:{state}", kind.as_str())
}

/// The JSON patch that switches a Service back to `selector`.
pub fn selector_patch(resource_version: &str, selector: &Value) -> Value {
    json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/spec/selector", "value": selector},
    ])
}

/// Which destination is stable and which is the canary: from the annotations when set, else
/// from the change itself: the canary is the destination that gained the most weight, the
/// stable one the destination that lost the most.
pub fn stable_and_canary(
    vs: &VirtualServiceState,
    change: &TrafficChange,
) -> Option<(String, String)> {
    let before: Vec<RouteWeight> = serde_json::from_value(change.from.clone()).ok()?;
    let deltas: Vec<(&str, i64)> = vs
        .weights
        .iter()
        .filter_map(|now| {
            let old = before.iter().find(|b| {
                b.route == now.route && b.destination == now.destination && b.key == now.key
            })?;
            Some((now.key.as_str(), now.weight - old.weight))
        })
        .collect();
    let gained = deltas
        .iter()
        .filter(|(_, d)| *d > 0)
        .max_by_key(|(_, d)| *d)
        .map(|(k, _)| k.to_string());
    let lost = deltas
        .iter()
        .filter(|(_, d)| *d < 0)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k.to_string());
    let stable = vs.stable.clone().or(lost)?;
    let canary = vs.canary.clone().or(gained)?;
    (stable != canary).then_some((stable, canary))
}

/// The weights after a revert: 100 to `stable` and 0 to `canary` in every route holding both.
pub fn reverted_weights(weights: &[RouteWeight], stable: &str, canary: &str) -> Vec<RouteWeight> {
    let routes_with_both: Vec<usize> = weights
        .iter()
        .filter(|w| w.key == canary)
        .map(|w| w.route)
        .filter(|r| weights.iter().any(|w| w.route == *r && w.key == stable))
        .collect();
    weights
        .iter()
        .map(|w| {
            let mut w = w.clone();
            if routes_with_both.contains(&w.route) {
                if w.key == stable {
                    w.weight = 100;
                } else if w.key == canary {
                    w.weight = 0;
                }
            }
            w
        })
        .collect()
}

/// The JSON patch from `live` to `target` weights: one `add` per changed weight (`add` also
/// creates a weight the destination did not spell out), nothing else touched.
pub fn weights_patch(
    resource_version: &str,
    live: &[RouteWeight],
    target: &[RouteWeight],
) -> Value {
    let mut ops =
        vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})];
    for (now, want) in live.iter().zip(target) {
        if now.weight != want.weight {
            ops.push(json!({
                "op": "add",
                "path": format!("/spec/http/{}/route/{}/weight", want.route, want.destination),
                "value": want.weight,
            }));
        }
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(stable: i64, canary: i64) -> Value {
        json!({"hosts": ["web"], "http": [
            {"match": [{"headers": {"x-canary": {"exact": "1"}}}], "route": [{"destination": {"host": "web", "subset": "v2"}}]},
            {"route": [
                {"destination": {"host": "web", "subset": "v1"}, "weight": stable},
                {"destination": {"host": "web", "subset": "v2"}, "weight": canary}
            ]}
        ]})
    }

    fn vs(weights: Vec<RouteWeight>) -> VirtualServiceState {
        VirtualServiceState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u".into(),
            api_version: "networking.istio.io/v1beta1".into(),
            resource_version: "7".into(),
            weights,
            tracked: true,
            stable: None,
            canary: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    #[test]
    fn a_weight_shift_is_noted_and_reverted_to_the_previous_stable() {
        let mut index = WorkloadIndex::default();
        assert!(
            index
                .apply_virtual_service(vs(route_weights(&spec(100, 0))), at(0))
                .is_none()
        );
        let change = index
            .apply_virtual_service(vs(route_weights(&spec(90, 10))), at(5))
            .expect("a change");
        assert_eq!(change.at, at(5));
        let live = vs(route_weights(&spec(90, 10)));
        let (stable, canary) = stable_and_canary(&live, &change).expect("roles");
        assert_eq!((stable.as_str(), canary.as_str()), ("web/v1", "web/v2"));
        let target = reverted_weights(&live.weights, &stable, &canary);
        let patch = weights_patch("7", &live.weights, &target);
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/spec/http/1/route/0/weight", "value": 100},
                {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 0}
            ]),
            "the header-matched route is left alone"
        );
    }

    #[test]
    fn a_selector_switch_is_noted_only_for_tracked_services() {
        let mut index = WorkloadIndex::default();
        let mk = |version: &str, tracked: bool| ServiceState {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u".into(),
            resource_version: "1".into(),
            selector: [
                ("app".to_string(), "web".to_string()),
                ("version".to_string(), version.to_string()),
            ]
            .into(),
            tracked,
        };
        assert!(index.apply_service(mk("blue", false), at(0)).is_none());
        assert!(index.apply_service(mk("green", false), at(1)).is_none());
        assert!(index.apply_service(mk("blue", true), at(2)).is_some());
        let change = index
            .last_traffic_change(TrafficKind::Service, "default", "web")
            .expect("kept");
        assert_eq!(change.from, json!({"app": "web", "version": "green"}));
        // A remembered change that no longer matches the live selector is forgotten.
        index.apply_service(mk("red", false), at(3));
        assert!(
            index
                .last_traffic_change(TrafficKind::Service, "default", "web")
                .is_none()
        );
    }
}
