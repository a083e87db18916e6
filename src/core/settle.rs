//! Settling actions whose result is unknown, and when a decision is tried again.
//!
//! A write to the API server ends one of three ways: applied, not applied, or *unknown* (the
//! answer was lost: a timeout, a dropped connection, a 5xx, a crash between the call and the
//! record). Unknown is never guessed. It is settled by reading the object again and comparing
//! what is live with what the action blamed and what it reverted to: the live state is the
//! target (applied), the blamed state (not applied), or a third one (someone else changed it).
//!
//! The state keys compared are the ones an action's intent records: a ReplicaSet UID for a
//! Deployment or a Rollout, a traffic state key for a Service or a VirtualService.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// What re-reading the object says about an action whose answer was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The live state is the action's target: the write was applied.
    Applied,
    /// The live state is still the blamed one: the write was not applied.
    NotApplied,
    /// Neither: the object moved on (or was replaced). The sentence says to what.
    Elsewhere(String),
}

/// Compares the live state key with the action's blamed and target keys.
pub fn classify(blamed_key: &str, target_key: &str, live_key: Option<&str>, live: &str) -> Settled {
    match live_key {
        Some(k) if k == target_key => Settled::Applied,
        Some(k) if k == blamed_key => Settled::NotApplied,
        _ => Settled::Elsewhere(live.to_string()),
    }
}

/// How often, and how soon, a decision that failed for a transient reason is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Decisions made for one alert, the first included, before it is left failed.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// When to decide again after `attempts` decisions (1 = the first one failed), or `None`
    /// when the attempts are used up.
    pub fn next(&self, attempts: u32, now: Timestamp) -> Option<Timestamp> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        let wait = self
            .first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let wait = SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_secs(120));
        Some(now.checked_add(wait).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_state_decides() {
        assert_eq!(classify("b", "t", Some("t"), "rs t"), Settled::Applied);
        assert_eq!(classify("b", "t", Some("b"), "rs b"), Settled::NotApplied);
        assert_eq!(
            classify("b", "t", Some("x"), "rs x"),
            Settled::Elsewhere("rs x".into())
        );
        assert_eq!(
            classify("b", "t", None, "no current"),
            Settled::Elsewhere("no current".into())
        );
    }

    #[test]
    fn retries_back_off_and_stop() {
        let p = RetryPolicy {
            max_attempts: 4,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let after = |n| p.next(n, now).map(|t| t.duration_since(now).as_secs());
        assert_eq!(after(1), Some(2));
        assert_eq!(after(2), Some(4));
        assert_eq!(after(3), Some(5), "capped");
        assert_eq!(after(4), None, "attempts used up");
    }
}
