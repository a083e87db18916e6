//! Routing: which destination of a channel a notification goes to.
//!
//! A rule's `match` is a set of label pairs. A notification matches when one of its alerts
//! carries every pair; the correlated workload's namespace counts as the label `namespace`, so
//! `match = {namespace = "payments"}` works whichever label the alert used. The first matching
//! rule wins; without one, the channel's default destination is used.

use crate::config::Matchers;

use super::Notification;

/// Whether `n` matches every pair of `matchers`.
pub fn matches(matchers: &Matchers, n: &Notification) -> bool {
    if matchers.is_empty() {
        return false;
    }
    let namespace = n.workload.as_ref().map(|w| w.namespace.as_str());
    n.alerts.iter().any(|alert| {
        matchers.iter().all(|(k, v)| {
            alert.labels.get(k) == Some(v) || (k == "namespace" && namespace == Some(v.as_str()))
        })
    })
}

/// The target of the first rule that matches `n`, else `default`.
pub fn pick<'a, T>(
    rules: impl IntoIterator<Item = (&'a Matchers, &'a T)>,
    default: &'a T,
    n: &Notification,
) -> &'a T {
    rules
        .into_iter()
        .find(|(m, _)| matches(m, n))
        .map_or(default, |(_, target)| target)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn rules() -> Vec<(Matchers, String)> {
        let m = |pairs: &[(&str, &str)]| -> Matchers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        vec![
            (m(&[("namespace", "payments")]), "#payments".to_string()),
            (
                m(&[("severity", "none"), ("team", "web")]),
                "#web".to_string(),
            ),
        ]
    }

    #[test]
    fn first_match_wins_and_namespace_comes_from_the_workload_too() {
        let rules = rules();
        let default = "#oncall".to_string();
        let route = |n: &Notification| pick(rules.iter().map(|(m, t)| (m, t)), &default, n).clone();
        let mut n = Notification::test_sample(None, Timestamp::UNIX_EPOCH);
        assert_eq!(route(&n), "#oncall");
        n.alerts[0].labels.insert("team".into(), "web".into());
        assert_eq!(route(&n), "#web");
        if let Some(w) = &mut n.workload {
            w.namespace = "payments".into();
        }
        assert_eq!(route(&n), "#payments", "the workload's namespace counts");
        n.workload = None;
        n.alerts[0]
            .labels
            .insert("namespace".into(), "payments".into());
        assert_eq!(route(&n), "#payments", "and so does the alert's label");
    }
}
