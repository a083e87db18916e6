//! What a message says, whichever channel carries it.
//!
//! A [`Notification`] is stored as the outbox payload, so it holds everything a message shows:
//! the alerts (labels, annotations, links), the workload, the rollout blamed and the revision
//! rolled back to (with images), what was done or what dry-run would have done, the outcome code
//! and sentence, and the incident's id and link. The channels only format it: [`Notification::subject`],
//! [`Notification::plain_text`] and [`Notification::html`] here; Block Kit in `blocks`.

use std::fmt::Write;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::core::alert::{Alert, AlertSource, AlertStatus, LabelSet};
use crate::core::engine::{Command, Decision, Outcome, WorkloadRef, describe};
use crate::core::undo::RevisionRef;
use crate::link::safe_link;
use crate::store::{ActionResult, ActionStatus};

/// What a message is about. New kinds (verification: `Recovered`, `NotRecovered`) are added
/// here with their headline; they are queued like any other message about an incident and so
/// land as replies in its thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    /// A notable decision or the result of an action.
    Outcome,
    /// `rollbackd notify test`: sample content, marked as a test, about no real incident.
    Test,
}

/// One message about an incident.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    pub kind: MessageKind,
    pub incident_id: i64,
    /// When the decision or result was recorded.
    pub at: Timestamp,
    pub outcome: Outcome,
    /// The sentence that explains the outcome (for a result: the executor's report).
    pub reason: String,
    /// For a result: the decision's sentence, why rollbackd acted at all.
    #[serde(default)]
    pub decision_reason: Option<String>,
    pub alerts: Vec<AlertInfo>,
    pub workload: Option<WorkloadRef>,
    /// The rollout blamed.
    pub from: Option<RevisionInfo>,
    /// The revision rolled back to (or that dry-run would have rolled back to).
    pub to: Option<RevisionInfo>,
    /// What was done; `None` when nothing was attempted.
    pub action: Option<ActionInfo>,
    /// The incident page, when `server.public_url` is set.
    pub link: Option<String>,
}

/// An alert as a message shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertInfo {
    pub name: String,
    pub status: AlertStatus,
    pub source: AlertSource,
    pub starts_at: Timestamp,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    /// Prometheus's link to the expression (`generatorURL`).
    pub generator_url: String,
    /// The Alertmanager that sent it (`externalURL`).
    pub alertmanager_url: Option<String>,
}

/// What was blamed or gone back to, as a message shows it: a ReplicaSet revision, or a
/// traffic state (a Service selector, VirtualService weights).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The revision number; `None` for a traffic state.
    pub revision: Option<i64>,
    /// The ReplicaSet, or the traffic state itself ("selector {…}").
    pub name: String,
    pub image: Option<String>,
    /// "revision 3 (web-5d8f, nginx:3.0)", or the traffic state.
    pub text: String,
}

impl RevisionInfo {
    fn of(r: &RevisionRef) -> RevisionInfo {
        // The engine records a traffic change as a revision 0 without an image whose key is
        // a state key (`describe` shows it by name alone); it has no revision number.
        let traffic = r.revision == 0 && r.image.is_none() && r.uid.contains(':');
        RevisionInfo {
            revision: (!traffic).then_some(r.revision),
            name: r.name.clone(),
            image: r.image.clone(),
            text: describe(r),
        }
    }

    fn named(name: String) -> RevisionInfo {
        RevisionInfo {
            revision: None,
            text: name.clone(),
            name,
            image: None,
        }
    }
}

impl std::fmt::Display for RevisionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An action and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionInfo {
    /// The action's kind as the store records it: `undo-deployment`, `abort-rollout`,
    /// `undo-rollout`, `switch-selector`, `reset-weights`.
    pub kind: String,
    pub dry_run: bool,
    /// `succeeded`, `skipped` or `failed`.
    pub status: String,
}

impl Notification {
    /// The message about a decision (`result` `None`: a notable skip) or an action's result.
    pub fn about(
        incident_id: i64,
        alert: &Alert,
        decision: &Decision,
        result: Option<&ActionResult>,
        public_url: Option<&str>,
        at: Timestamp,
    ) -> Notification {
        let (outcome, reason) = match result {
            Some(r) => (r.outcome, r.message.clone()),
            None => (decision.outcome, decision.reason.clone()),
        };
        let to = match (result.and_then(|r| r.target.as_ref()), &decision.command) {
            (Some(target), _) => Some(RevisionInfo::of(target)),
            (None, Some(Command::UndoDeployment(c))) => Some(RevisionInfo::of(&c.planned_target)),
            (None, Some(Command::UndoRollout(c))) => Some(RevisionInfo::of(&c.planned_target)),
            (None, Some(Command::AbortRollout(c))) => Some(RevisionInfo::of(&c.stable)),
            (None, Some(other)) => Some(RevisionInfo::named(other.intent().target_name)),
            (None, None) => None,
        };
        let action = match (result, &decision.command) {
            (Some(r), Some(command)) => Some(ActionInfo {
                kind: command.intent().kind.to_string(),
                dry_run: command.dry_run(),
                status: match r.status {
                    ActionStatus::Succeeded => "succeeded",
                    ActionStatus::Skipped => "skipped",
                    ActionStatus::Failed => "failed",
                    ActionStatus::Unknown => "unknown",
                }
                .into(),
            }),
            _ => None,
        };
        Notification {
            kind: MessageKind::Outcome,
            incident_id,
            at,
            outcome,
            reason,
            decision_reason: result.map(|_| decision.reason.clone()),
            alerts: vec![AlertInfo {
                name: alert.name().to_string(),
                status: alert.status,
                source: alert.source,
                starts_at: alert.starts_at,
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                generator_url: alert.generator_url.clone(),
                alertmanager_url: alert.external_url.clone(),
            }],
            workload: decision.workload.clone(),
            from: decision
                .rollout
                .as_ref()
                .map(|r| RevisionInfo::of(&r.revision)),
            to,
            action,
            link: public_url.map(|base| incident_link(base, incident_id)),
        }
    }

    /// Sample content for `rollbackd notify test`: realistic, and marked as a test throughout.
    pub fn test_sample(public_url: Option<&str>, at: Timestamp) -> Notification {
        let labels: LabelSet = [
            ("alertname", "RollbackdTest"),
            ("namespace", "default"),
            ("deployment", "example"),
            ("severity", "none"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let annotations: LabelSet = [(
            "summary".to_string(),
            "A test message from rollbackd; nothing is wrong.".to_string(),
        )]
        .into_iter()
        .collect();
        Notification {
            kind: MessageKind::Test,
            incident_id: 0,
            at,
            outcome: Outcome::RolledBack,
            reason: "This is a test sent by `rollbackd notify test`: no alert fired and nothing \
                     was rolled back."
                .into(),
            decision_reason: None,
            alerts: vec![AlertInfo {
                name: "RollbackdTest".into(),
                status: AlertStatus::Firing,
                source: AlertSource::Alertmanager,
                starts_at: at,
                labels,
                annotations,
                generator_url: String::new(),
                alertmanager_url: None,
            }],
            workload: Some(WorkloadRef {
                kind: "Deployment".into(),
                namespace: "default".into(),
                name: "example".into(),
                uid: String::new(),
            }),
            from: Some(RevisionInfo {
                revision: Some(3),
                name: "example-7c9d".into(),
                image: Some("registry.example/example:2.0".into()),
                text: "revision 3 (example-7c9d, registry.example/example:2.0)".into(),
            }),
            to: Some(RevisionInfo {
                revision: Some(2),
                name: "example-5f4b".into(),
                image: Some("registry.example/example:1.9".into()),
                text: "revision 2 (example-5f4b, registry.example/example:1.9)".into(),
            }),
            action: None,
            link: public_url.map(|base| format!("{}/", base.trim_end_matches('/'))),
        }
    }

    /// The verdict in capitals, for a subject or header read on a phone.
    pub fn verdict(&self) -> String {
        let verdict = match self.outcome {
            Outcome::RolledBack => "ROLLED BACK".to_string(),
            Outcome::Aborted => "ABORTED".to_string(),
            Outcome::WouldRollBack => "WOULD ROLL BACK (dry-run)".to_string(),
            Outcome::Failed => "ROLLBACK FAILED".to_string(),
            Outcome::Recovered => "RECOVERED".to_string(),
            Outcome::NotRecovered => "NOT RECOVERED after rollback".to_string(),
            Outcome::Held => "HELD: not rolled back".to_string(),
            Outcome::GitopsSuspended => "ROLLED BACK (Argo CD sync suspended)".to_string(),
            Outcome::GitopsSynced => "SYNCING BACK (Argo CD)".to_string(),
            Outcome::GitopsNotify => {
                "NOT ROLLED BACK (Argo CD manages it: act in Argo CD)".to_string()
            }
            other => format!("NOT ROLLED BACK ({other})"),
        };
        match self.kind {
            MessageKind::Outcome => verdict,
            MessageKind::Test => format!("TEST: {verdict}"),
        }
    }

    /// "default/checkout", or "(no workload)".
    pub fn target(&self) -> String {
        match &self.workload {
            Some(w) => format!("{}/{}", w.namespace, w.name),
            None => "(no workload)".into(),
        }
    }

    /// The alert names, each once, in order.
    pub fn alert_names(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for a in &self.alerts {
            if !names.contains(&a.name.as_str()) {
                names.push(&a.name);
            }
        }
        names.join(", ")
    }

    /// "rev 3 → 2", "rev 3", or nothing (traffic states have no revision number).
    pub fn revisions_short(&self) -> Option<String> {
        let number = |r: &Option<RevisionInfo>| r.as_ref().and_then(|r| r.revision);
        match (number(&self.from), number(&self.to)) {
            (Some(f), Some(t)) => Some(format!("rev {f} → {t}")),
            (Some(f), None) if self.to.is_none() => Some(format!("rev {f}")),
            _ => None,
        }
    }

    /// `[rollbackd] ROLLED BACK default/checkout: HighErrorRate (rev 3 → 2)`: one line, no
    /// control characters, at most 200 characters.
    pub fn subject(&self) -> String {
        let revs = self
            .revisions_short()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let head = format!("[rollbackd] {} {}: ", self.verdict(), self.target());
        let budget = 200usize.saturating_sub(head.chars().count() + revs.chars().count());
        let subject = format!("{head}{}{revs}", truncate(&self.alert_names(), budget));
        one_line(&subject)
    }

    /// What was done, in one sentence.
    pub fn summary(&self) -> String {
        let workload = self
            .workload
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "(no workload)".into());
        let span = match (&self.from, &self.to) {
            (Some(f), Some(t)) => format!(" from {f} to {t}"),
            (Some(f), None) => format!(" (rollout blamed: {f})"),
            _ => String::new(),
        };
        match self.outcome {
            Outcome::RolledBack => format!("Rolled back {workload}{span}."),
            Outcome::Aborted => format!(
                "Aborted the update of {workload}{}: traffic is back on the stable pods.",
                self.from
                    .as_ref()
                    .map(|f| format!(" to {f}"))
                    .unwrap_or_default()
            ),
            Outcome::WouldRollBack => {
                format!("Dry-run: would have rolled back {workload}{span}. Nothing was changed.")
            }
            Outcome::Failed => format!("The rollback of {workload}{span} failed."),
            Outcome::Recovered => format!("{workload} recovered after the rollback{span}."),
            Outcome::NotRecovered => format!(
                "{workload} did not recover after the rollback{span}; it is held until a human acknowledges the incident."
            ),
            Outcome::GitopsSuspended => {
                format!("Suspended Argo CD's automated sync and rolled back {workload}{span}.")
            }
            Outcome::GitopsSynced => {
                format!("Started an Argo CD sync of {workload} to the previous Git revision{span}.")
            }
            Outcome::GitopsNotify => format!(
                "Did not roll back {workload}{span}: Argo CD would put it back (the reason says what to run in Argo CD)."
            ),
            other => format!("Did not roll back {workload}{span}: {other}."),
        }
    }

    /// The sentence after "Why": for an undo that went through, why rollbackd acted (the
    /// result would only repeat the summary); otherwise the outcome's own sentence.
    pub fn why(&self) -> &str {
        match (self.outcome, &self.decision_reason) {
            (Outcome::RolledBack | Outcome::Aborted | Outcome::WouldRollBack, Some(decided)) => {
                decided
            }
            _ => &self.reason,
        }
    }

    /// For an action that did not go through: why it was attempted.
    pub fn acted_because(&self) -> Option<&str> {
        match self.outcome {
            Outcome::RolledBack | Outcome::Aborted | Outcome::WouldRollBack => None,
            _ => self.decision_reason.as_deref(),
        }
    }

    /// "undo-deployment: succeeded", "undo-deployment (dry-run): succeeded", or "none".
    pub fn action_text(&self) -> String {
        match &self.action {
            Some(a) if a.dry_run => format!("{} (dry-run): {}", a.kind, a.status),
            Some(a) => format!("{}: {}", a.kind, a.status),
            None => "none".into(),
        }
    }

    /// The label a revision line gets for the target, which depends on the outcome.
    pub fn to_label(&self) -> &'static str {
        match self.outcome {
            Outcome::RolledBack => "Rolled back to",
            Outcome::Aborted => "Back on",
            Outcome::WouldRollBack => "Would roll back to",
            _ => "Target",
        }
    }

    /// The plain-text body (email text part).
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}\n",
            self.subject().trim_start_matches("[rollbackd] ")
        );
        let _ = writeln!(out, "{}", self.summary());
        let _ = writeln!(out, "Why ({}): {}", self.outcome, self.why());
        if let Some(decided) = self.acted_because() {
            let _ = writeln!(out, "Acted because: {decided}");
        }
        out.push('\n');
        for (label, value) in self.facts() {
            let _ = writeln!(out, "{label}: {value}");
        }
        let _ = writeln!(out, "\nAlerts:");
        for a in &self.alerts {
            let _ = writeln!(
                out,
                "- {} ({} since {}, via {})",
                a.name,
                a.status.as_str(),
                a.starts_at,
                a.source
            );
            for (k, v) in &a.annotations {
                let _ = writeln!(out, "  {k}: {}", one_line(v));
            }
            let _ = writeln!(out, "  labels: {}", label_list(&a.labels));
            if !a.generator_url.is_empty() {
                let _ = writeln!(out, "  source: {}", a.generator_url);
            }
            if let Some(am) = &a.alertmanager_url {
                let _ = writeln!(out, "  Alertmanager: {am}");
            }
        }
        let _ = writeln!(out, "\n-- \n{}", self.footer());
        out
    }

    /// The HTML body (email HTML part): the same content, every value escaped.
    pub fn html(&self) -> String {
        let e = escape_html;
        let mut out = String::from("<!DOCTYPE html>\n<html><body>\n");
        let _ = writeln!(
            out,
            "<h2>{}</h2>",
            e(self.subject().trim_start_matches("[rollbackd] "))
        );
        let _ = writeln!(out, "<p><strong>{}</strong></p>", e(&self.summary()));
        let _ = writeln!(
            out,
            "<p>Why (<code>{}</code>): {}</p>",
            e(self.outcome.code()),
            e(self.why())
        );
        if let Some(decided) = self.acted_because() {
            let _ = writeln!(out, "<p>Acted because: {}</p>", e(decided));
        }
        out.push_str("<table>\n");
        for (label, value) in self.facts() {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                e(label),
                e(&value)
            );
        }
        out.push_str("</table>\n");
        if let Some(link) = self.link.as_deref().and_then(safe_link) {
            let _ = writeln!(out, "<p><a href=\"{}\">Open the incident</a></p>", e(link));
        }
        out.push_str("<h3>Alerts</h3>\n<ul>\n");
        for a in &self.alerts {
            let _ = write!(
                out,
                "<li><strong>{}</strong> ({} since {}, via {})",
                e(&a.name),
                e(a.status.as_str()),
                e(&a.starts_at.to_string()),
                e(a.source.as_str())
            );
            for (k, v) in &a.annotations {
                let _ = write!(out, "<br>{}: {}", e(k), e(v));
            }
            let _ = write!(
                out,
                "<br>labels: <code>{}</code>",
                e(&label_list(&a.labels))
            );
            match safe_link(&a.generator_url) {
                Some(url) => {
                    let _ = write!(out, "<br><a href=\"{}\">source</a>", e(url));
                }
                None if !a.generator_url.is_empty() => {
                    let _ = write!(out, "<br>source: <code>{}</code>", e(&a.generator_url));
                }
                None => {}
            }
            if let Some(am) = &a.alertmanager_url {
                match safe_link(am) {
                    Some(url) => {
                        let _ = write!(out, " · <a href=\"{}\">Alertmanager</a>", e(url));
                    }
                    None => {
                        let _ = write!(out, " · Alertmanager: <code>{}</code>", e(am));
                    }
                }
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
        let _ = writeln!(out, "<hr><p><small>{}</small></p>", e(&self.footer()));
        out.push_str("</body></html>\n");
        out
    }

    /// The facts every channel shows, as (label, value).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            (
                "Workload",
                self.workload
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "(no workload)".into()),
            ),
            ("Outcome", self.outcome.code().to_string()),
        ];
        if let Some(f) = &self.from {
            facts.push(("Rollout blamed", f.to_string()));
        }
        if let Some(t) = &self.to {
            facts.push((self.to_label(), t.to_string()));
        }
        facts.push(("Action", self.action_text()));
        facts.push(("Incident", self.incident_text()));
        facts
    }

    /// "#12 https://…/incidents/12", "#12", or "test (no incident)".
    pub fn incident_text(&self) -> String {
        match (self.kind, &self.link) {
            (MessageKind::Test, _) => "test (no incident)".into(),
            (_, Some(link)) => format!("#{} {link}", self.incident_id),
            (_, None) => format!("#{}", self.incident_id),
        }
    }

    /// "rollbackd · incident #12 · 2024-05-01T10:00:00Z"
    pub fn footer(&self) -> String {
        match self.kind {
            MessageKind::Test => format!("rollbackd · test message · {}", self.at),
            MessageKind::Outcome => {
                format!("rollbackd · incident #{} · {}", self.incident_id, self.at)
            }
        }
    }
}

/// The page of an incident under `base` (`server.public_url`).
pub fn incident_link(base: &str, incident_id: i64) -> String {
    format!("{}/incidents/{incident_id}", base.trim_end_matches('/'))
}

/// `a="1", b="2"`
pub fn label_list(labels: &LabelSet) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", one_line(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Control characters (line breaks included) become spaces.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters; a cut string ends with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk() -> Notification {
        let mut n = Notification::test_sample(Some("https://rb.example"), Timestamp::UNIX_EPOCH);
        n.kind = MessageKind::Outcome;
        n.incident_id = 7;
        n.link = Some(incident_link("https://rb.example/", 7));
        n
    }

    #[test]
    fn the_subject_reads_on_a_phone() {
        let mut n = mk();
        n.alerts[0].name = "HighErrorRate".into();
        assert_eq!(
            n.subject(),
            "[rollbackd] ROLLED BACK default/example: HighErrorRate (rev 3 → 2)"
        );
        n.outcome = Outcome::Paused;
        n.to = None;
        assert_eq!(
            n.subject(),
            "[rollbackd] NOT ROLLED BACK (paused) default/example: HighErrorRate (rev 3)"
        );
        n.alerts[0].name = format!("Evil\r\nBcc: x@y{}", "A".repeat(500));
        let s = n.subject();
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
        assert!(s.chars().count() <= 200, "{}", s.chars().count());
        assert!(s.ends_with("… (rev 3)"), "{s}");
    }

    #[test]
    fn a_traffic_switch_and_an_abort_read_as_what_they_are() {
        use crate::core::engine::{AbortRollout, RolloutRef, SwitchSelector};
        use serde_json::json;

        let labels: LabelSet = [("alertname", "High5xx"), ("namespace", "shop")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let alert = Alert {
            source: AlertSource::Alertmanager,
            status: AlertStatus::Firing,
            fingerprint: crate::core::alert::Fingerprint::of(&labels),
            labels,
            annotations: LabelSet::new(),
            starts_at: Timestamp::UNIX_EPOCH,
            ends_at: None,
            generator_url: String::new(),
            external_url: None,
        };
        let blamed = RevisionRef {
            name: "selector {\"slot\":\"green\"}".into(),
            uid: "service:uid-web:{\"slot\":\"green\"}".into(),
            revision: 0,
            image: None,
        };
        let mut decision = Decision {
            outcome: Outcome::RolledBack,
            reason: "High5xx started 1m after the switch".into(),
            workload: Some(WorkloadRef {
                kind: "Service".into(),
                namespace: "shop".into(),
                name: "web".into(),
                uid: "uid-web".into(),
            }),
            rollout: Some(RolloutRef {
                revision: blamed.clone(),
                since: Timestamp::UNIX_EPOCH,
            }),
            command: Some(Command::SwitchSelector(SwitchSelector {
                namespace: "shop".into(),
                name: "web".into(),
                uid: "uid-web".into(),
                blamed: json!({"slot": "green"}),
                back_to: json!({"slot": "blue"}),
                blamed_key: blamed.uid.clone(),
                target_key: "service:uid-web:{\"slot\":\"blue\"}".into(),
                dry_run: false,
            })),
        };
        let result = ActionResult {
            status: ActionStatus::Succeeded,
            outcome: Outcome::RolledBack,
            message: "switched".into(),
            target: None,
            data: serde_json::Value::Null,
            transient: false,
        };
        let n = Notification::about(
            3,
            &alert,
            &decision,
            Some(&result),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(n.subject(), "[rollbackd] ROLLED BACK shop/web: High5xx");
        assert_eq!(
            n.summary(),
            "Rolled back service shop/web from selector {\"slot\":\"green\"} to selector {\"slot\":\"blue\"}."
        );
        assert_eq!(n.action_text(), "switch-selector: succeeded");
        assert_eq!(n.why(), "High5xx started 1m after the switch");

        let rs = |name: &str, revision| RevisionRef {
            name: name.into(),
            uid: format!("uid-{name}"),
            revision,
            image: Some(format!("app:{revision}")),
        };
        decision.workload = Some(WorkloadRef {
            kind: "Rollout".into(),
            namespace: "shop".into(),
            name: "api".into(),
            uid: "uid-api".into(),
        });
        decision.rollout = Some(RolloutRef {
            revision: rs("api-2", 2),
            since: Timestamp::UNIX_EPOCH,
        });
        decision.command = Some(Command::AbortRollout(AbortRollout {
            namespace: "shop".into(),
            name: "api".into(),
            uid: "uid-api".into(),
            blamed: rs("api-2", 2),
            stable: rs("api-1", 1),
            dry_run: false,
        }));
        let result = ActionResult {
            outcome: Outcome::Aborted,
            ..result
        };
        let n = Notification::about(
            4,
            &alert,
            &decision,
            Some(&result),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            n.subject(),
            "[rollbackd] ABORTED shop/api: High5xx (rev 2 → 1)"
        );
        assert!(
            n.summary()
                .starts_with("Aborted the update of rollout shop/api to revision 2")
        );
        assert!(
            n.plain_text()
                .contains("Back on: revision 1 (api-1, app:1)")
        );
    }

    #[test]
    fn html_escapes_everything_from_peers() {
        let mut n = mk();
        n.alerts[0]
            .annotations
            .insert("summary".into(), "<script>alert(1)</script> & \"q\"".into());
        n.alerts[0].generator_url = "javascript:alert(1)".into();
        let html = n.html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"));
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(
            html.contains("source: <code>javascript:alert(1)</code>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"https://rb.example/incidents/7\">"));
    }

    #[test]
    fn only_http_urls_become_links() {
        for hostile in [
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "//evil.example/x",
        ] {
            let mut n = mk();
            n.alerts[0].generator_url = hostile.into();
            n.alerts[0].alertmanager_url = Some(hostile.into());
            n.link = Some(hostile.into());
            let html = n.html().to_ascii_lowercase();
            assert_eq!(html.matches("<a ").count(), 0, "{hostile:?}: {html}");
            assert!(!html.contains("<script"), "{html}");
        }
    }

    #[test]
    fn the_text_part_has_every_fact() {
        let text = mk().plain_text();
        for needle in [
            "ROLLED BACK default/example",
            "Rolled back deployment default/example from revision 3 (example-7c9d, registry.example/example:2.0) to revision 2",
            "Why (rolled-back):",
            "Incident: #7 https://rb.example/incidents/7",
            "labels: alertname=\"RollbackdTest\"",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
    }
}
