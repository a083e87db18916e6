//! Alerts as rollbackd sees them, whichever source they came from.
//!
//! An [`Alert`] is one firing or resolved alert instance: a label set, its annotations and the
//! time it started. Its identity is the Alertmanager fingerprint of its labels plus `startsAt`:
//! the same alert delivered again has the same [`AlertKey`], so it is never acted on twice.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Label and annotation maps are sorted so that fingerprints and stored JSON are stable.
pub type LabelSet = BTreeMap<String, String>;

/// Where an alert came from; recorded with every alert so reviews can tell the paths apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// Posted to `POST /api/v1/alerts` by Alertmanager.
    Alertmanager,
    /// Produced by rollbackd's own PromQL poller.
    Prometheus,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Alertmanager => "alertmanager",
            AlertSource::Prometheus => "prometheus",
        }
    }
}

impl fmt::Display for AlertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// The Alertmanager fingerprint of a label set: FNV-1a 64 over the sorted labels, each name and
/// value followed by the byte 255, shown as 16 hex digits (prometheus/common `model.Fingerprint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 255;

impl Fingerprint {
    pub fn of(labels: &LabelSet) -> Fingerprint {
        let mut hash = FNV_OFFSET;
        let mut add = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        // BTreeMap iterates in byte order of the names, which is Go's sort order for strings.
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(hash)
    }

    /// Parses the 16-hex-digit form Alertmanager sends.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The label an alert of a rule's post-rollout form carries: `regression` or `pre-existing`.
pub const POST_ROLLOUT_LABEL: &str = "rollbackd_post_rollout";
/// The annotation with the sentence of the post-rollout evaluation behind an alert.
pub const EVIDENCE_ANNOTATION: &str = "rollbackd_evidence";

/// What a rule's post-rollout form concluded, with its sentence (every number in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostRolloutVerdict<'a> {
    /// Worse than the threshold and than before the rollout.
    Regression(&'a str),
    /// Worse than the threshold, but as bad before the rollout.
    PreExisting(&'a str),
}

/// One alert instance, normalised from a webhook payload or from the poller.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub source: AlertSource,
    pub status: AlertStatus,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    /// `None` for a firing alert (Alertmanager sends `0001-01-01T00:00:00Z`).
    pub ends_at: Option<Timestamp>,
    pub generator_url: String,
    pub fingerprint: Fingerprint,
    /// The Alertmanager that sent it, when one did (`externalURL`).
    pub external_url: Option<String>,
}

impl Alert {
    pub fn key(&self) -> AlertKey {
        AlertKey {
            fingerprint: self.fingerprint,
            starts_at: self.starts_at,
        }
    }

    /// The verdict of a rule's post-rollout form, when the poller raised the alert in that
    /// form: its label [`POST_ROLLOUT_LABEL`] and its sentence [`EVIDENCE_ANNOTATION`].
    pub fn post_rollout(&self) -> Option<PostRolloutVerdict<'_>> {
        let evidence = self
            .annotations
            .get(EVIDENCE_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("no evidence recorded");
        match self.labels.get(POST_ROLLOUT_LABEL).map(String::as_str) {
            Some("regression") => Some(PostRolloutVerdict::Regression(evidence)),
            Some("pre-existing") => Some(PostRolloutVerdict::PreExisting(evidence)),
            _ => None,
        }
    }

    /// `alertname`, or a placeholder so that messages always have a name to show.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("(unnamed alert)")
    }
}

/// What makes one alert instance distinct: the same key delivered again is a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub fingerprint: Fingerprint,
    pub starts_at: Timestamp,
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.fingerprint, self.starts_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_label_set_is_the_fnv_offset() {
        assert_eq!(
            Fingerprint::of(&LabelSet::new()).to_string(),
            "cbf29ce484222325"
        );
    }

    #[test]
    fn fingerprint_is_order_independent_and_label_sensitive() {
        let a = labels(&[("alertname", "HighErrorRate"), ("namespace", "default")]);
        let b = labels(&[("namespace", "default"), ("alertname", "HighErrorRate")]);
        assert_eq!(Fingerprint::of(&a), Fingerprint::of(&b));
        let c = labels(&[("alertname", "HighErrorRate"), ("namespace", "prod")]);
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&c));
    }

    #[test]
    fn fingerprint_separates_name_from_value() {
        // Without the separator byte these two would hash the same bytes.
        let a = labels(&[("ab", "c")]);
        let b = labels(&[("a", "bc")]);
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&b));
    }

    #[test]
    fn fingerprint_round_trips_through_hex() {
        let fp = Fingerprint::of(&labels(&[("alertname", "X")]));
        assert_eq!(Fingerprint::parse(&fp.to_string()), Some(fp));
        assert_eq!(Fingerprint::parse("xyz"), None);
    }
}
