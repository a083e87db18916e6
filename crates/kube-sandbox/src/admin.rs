//! The request log and fault injection, shared by the in-process handle and the
//! `/sandbox/...` admin endpoints.
//!
//! Data model: an append-only `Vec<RecordedRequest>` (every API request in arrival order,
//! admin requests excluded) and a queue of armed [`Fault`]s, each with a remaining count.
//! A request takes the first armed fault whose verb and resource match; the fault's count
//! drops by one and it is removed at zero.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The status code answered (200 for a watch stream that started).
    pub status: u16,
}

impl RecordedRequest {
    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Make the next `count` requests matching `verb` and `resource` fail or wait.
///
/// JSON form (for `POST /sandbox/faults`):
/// `{"verb":"patch","resource":"deployments","count":1,"action":{"status":500}}` or
/// `{"verb":null,"resource":"rollouts/status","count":2,"action":{"delay":"1s"}}` or
/// `{"verb":"patch","resource":"deployments","count":1,"action":{"hold_answer":"30s"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Kubernetes verb: get list watch create update patch delete deletecollection; None = any.
    #[serde(default)]
    pub verb: Option<String>,
    /// Plural, with "/status" or "/scale" for a subresource; None = any. A discovery path
    /// (`/apis/argoproj.io/v1alpha1`, `/api/v1`, `/apis`) makes the fault apply to that
    /// discovery document instead: discovery is never faulted by a fault naming no resource.
    #[serde(default)]
    pub resource: Option<String>,
    pub count: u32,
    pub action: FaultAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with a Status body of that code, change nothing.
    Status(u16),
    /// Wait, then serve normally.
    Delay(#[serde(with = "humantime_serde")] Duration),
    /// Serve normally (a write is applied), then hold the answer back this long: what a
    /// client sees when an answer is lost on the way back.
    HoldAnswer(#[serde(with = "humantime_serde")] Duration),
}

#[derive(Default)]
pub struct Admin {
    /// (sequence number, request) in arrival order, and the last sequence number issued.
    requests: Mutex<(Vec<(u64, RecordedRequest)>, u64)>,
    faults: Mutex<Vec<Fault>>,
}

impl Admin {
    /// Log a request on arrival; its status is filled in by [`Admin::finish`].
    pub fn begin(&self, r: RecordedRequest) -> u64 {
        let mut log = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        log.1 += 1;
        let seq = log.1;
        log.0.push((seq, r));
        seq
    }

    pub fn finish(&self, seq: u64, status: u16) {
        let mut log = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        // The log may have been cleared meanwhile: then the entry is gone.
        if let Some((_, r)) = log.0.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.status = status;
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn clear_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }

    pub fn inject(&self, f: Fault) {
        if f.count > 0 {
            self.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(f);
        }
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Consume one use of the first fault matching this request, if any.
    pub fn take_fault(&self, verb: &str, resource: &str) -> Option<FaultAction> {
        self.take(|f| {
            f.verb
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case(verb))
                && f.resource.as_deref().is_none_or(|r| r == resource)
        })
    }

    /// Consume one use of the first fault naming this discovery path (a GET), if any.
    pub fn take_discovery_fault(&self, path: &str) -> Option<FaultAction> {
        self.take(|f| {
            f.verb
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case("get"))
                && f.resource.as_deref() == Some(path)
        })
    }

    fn take(&self, matches: impl Fn(&Fault) -> bool) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults.iter().position(matches)?;
        let action = faults[i].action.clone();
        faults[i].count -= 1;
        if faults[i].count == 0 {
            faults.remove(i);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_forms() {
        let f: Fault = serde_json::from_str(
            r#"{"verb":"patch","resource":"deployments","count":1,"action":{"status":500}}"#,
        )
        .unwrap();
        assert_eq!(f.action, FaultAction::Status(500));
        let f: Fault = serde_json::from_str(r#"{"count":2,"action":{"delay":"1s"}}"#).unwrap();
        assert_eq!(f.action, FaultAction::Delay(Duration::from_secs(1)));
        assert_eq!(f.verb, None);
    }

    #[test]
    fn faults_are_consumed() {
        let a = Admin::default();
        a.inject(Fault {
            verb: Some("get".into()),
            resource: Some("pods".into()),
            count: 2,
            action: FaultAction::Status(503),
        });
        assert_eq!(a.take_fault("list", "pods"), None);
        assert_eq!(a.take_fault("get", "pods"), Some(FaultAction::Status(503)));
        assert_eq!(a.take_fault("get", "pods"), Some(FaultAction::Status(503)));
        assert_eq!(a.take_fault("get", "pods"), None);
    }

    #[test]
    fn discovery_is_faulted_only_when_named() {
        let a = Admin::default();
        a.inject(Fault {
            verb: None,
            resource: None,
            count: 1,
            action: FaultAction::Status(500),
        });
        assert_eq!(a.take_discovery_fault("/apis/argoproj.io/v1alpha1"), None);
        a.clear_faults();
        a.inject(Fault {
            verb: None,
            resource: Some("/apis/argoproj.io/v1alpha1".into()),
            count: 1,
            action: FaultAction::Status(500),
        });
        assert_eq!(a.take_fault("get", "rollouts"), None);
        assert_eq!(
            a.take_discovery_fault("/apis/argoproj.io/v1alpha1"),
            Some(FaultAction::Status(500))
        );
        assert_eq!(a.take_discovery_fault("/apis/argoproj.io/v1alpha1"), None);
    }
}
