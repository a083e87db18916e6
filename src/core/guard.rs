//! Guard-rail settings, parsed and checked once from `[policy]`: who may be acted on (scope,
//! opt-in and opt-out annotations, alert label matchers), when not (freeze windows), and how
//! much (cooldown per workload, a global circuit breaker). The rules that use them live in
//! `engine::guard`; everything here is pure and takes the clock as an argument.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};

use super::alert::LabelSet;
use super::engine::PastAction;

/// The annotation, on a workload or its namespace, that opts it in (`"true"`) or out
/// (`"false"`) of automatic action.
pub const AUTO_ROLLBACK_ANNOTATION: &str = "rollbackd.io/auto-rollback";
/// The annotation on a workload that chooses what an automatic action is:
/// `rollback` (the default), `notify-only`, or `pause`.
pub const POLICY_ANNOTATION: &str = "rollbackd.io/policy";

/// The guard rails a decision to act must pass. `Default` has none at all (no cooldown, no
/// breaker, everything in scope): what tests of other rules want. The daemon's defaults come
/// from `[policy]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardPolicy {
    /// No automatic action on a workload for this long after the last one.
    pub cooldown: Duration,
    /// The circuit breaker: at most `breaker_max` automatic actions per `breaker_window`
    /// across the cluster (0: no breaker).
    pub breaker_max: usize,
    pub breaker_window: Duration,
    /// Whether a workload without the opt-in annotation (on itself or its namespace) is in
    /// scope.
    pub auto_rollback_default: bool,
    /// Only these namespaces (empty: all).
    pub namespaces_allow: Vec<String>,
    /// Never these namespaces.
    pub namespaces_deny: Vec<String>,
    /// Every matcher must match the alert's labels for it to trigger an action.
    pub alert_matchers: Vec<Matcher>,
    pub freezes: Vec<Freeze>,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        GuardPolicy {
            cooldown: Duration::ZERO,
            breaker_max: 0,
            breaker_window: Duration::ZERO,
            auto_rollback_default: true,
            namespaces_allow: Vec::new(),
            namespaces_deny: Vec::new(),
            alert_matchers: Vec::new(),
            freezes: Vec::new(),
        }
    }
}

/// A Prometheus-style label matcher: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.
/// Regular expressions are anchored, as in Prometheus.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Matcher {
    /// Parses `severity=~"critical|page"` (quotes optional).
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let ops = [
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ];
        let (at, token, op) = ops
            .iter()
            .filter_map(|(token, op)| text.find(token).map(|at| (at, *token, *op)))
            .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())))
            .ok_or_else(|| {
                format!("{text:?} is not a label matcher like severity=~\"critical|page\"")
            })?;
        let name = text[..at].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{text:?}: {name:?} is not a label name"));
        }
        let raw = text[at + token.len()..].trim();
        let value = raw
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(raw)
            .to_string();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("{text:?}: bad regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    /// Whether `labels` satisfy this matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{op}\"{}\"", self.name, self.value)
    }
}

/// A time when rollbackd records and notifies only: an explicit range, or a weekly window.
#[derive(Clone, Debug, PartialEq)]
pub enum Freeze {
    /// `2026-12-24T00:00:00Z/2026-12-27T00:00:00Z`
    Range { start: Timestamp, end: Timestamp },
    /// `sat,sun 00:00-24:00` or `fri 18:00-24:00`, in UTC.
    Weekly {
        days: Vec<Weekday>,
        from: Time,
        /// `None`: until midnight (`24:00`).
        to: Option<Time>,
    },
}

impl Freeze {
    /// Parses one `policy.freeze` entry; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Freeze, String> {
        let text = text.trim();
        if let Some((start, end)) = text.split_once('/') {
            let ts = |s: &str| {
                s.trim()
                    .parse::<Timestamp>()
                    .map_err(|e| format!("{text:?}: {s:?} is not an RFC 3339 time: {e}"))
            };
            let (start, end) = (ts(start)?, ts(end)?);
            if end <= start {
                return Err(format!("{text:?}: the end is not after the start"));
            }
            return Ok(Freeze::Range { start, end });
        }
        let (days, hours) = text.split_once(' ').ok_or_else(|| {
            format!("{text:?} is neither START/END (RFC 3339) nor DAYS HH:MM-HH:MM (UTC)")
        })?;
        let days = days
            .split(',')
            .map(|d| {
                weekday(d.trim()).ok_or_else(|| format!("{text:?}: {d:?} is not a day (mon … sun)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (from, to) = hours
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("{text:?}: hours must read HH:MM-HH:MM"))?;
        let time = |s: &str| {
            s.trim()
                .parse::<Time>()
                .map_err(|e| format!("{text:?}: {s:?} is not a time of day: {e}"))
        };
        let from = time(from)?;
        let to = if to.trim() == "24:00" {
            None
        } else {
            Some(time(to)?)
        };
        if to.is_some_and(|t| t <= from) {
            return Err(format!("{text:?}: the window ends before it starts"));
        }
        Ok(Freeze::Weekly { days, from, to })
    }

    /// Whether `now` falls in this freeze.
    pub fn contains(&self, now: Timestamp) -> bool {
        match self {
            Freeze::Range { start, end } => *start <= now && now < *end,
            Freeze::Weekly { days, from, to } => {
                let civil = now.to_zoned(jiff::tz::TimeZone::UTC).datetime();
                let t = civil.time();
                days.contains(&civil.weekday()) && *from <= t && to.is_none_or(|to| t < to)
            }
        }
    }
}

impl fmt::Display for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Freeze::Range { start, end } => write!(f, "{start}/{end}"),
            Freeze::Weekly { days, from, to } => {
                let days: Vec<&str> = days.iter().map(|d| day_name(*d)).collect();
                let to = to.map_or("24:00".to_string(), |t| t.strftime("%H:%M").to_string());
                write!(f, "{} {}-{to} UTC", days.join(","), from.strftime("%H:%M"))
            }
        }
    }
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

impl GuardPolicy {
    /// Automatic actions within the breaker's window before `now` (dry runs never count).
    pub fn actions_in_window<'a>(
        &self,
        past: &'a [PastAction],
        now: Timestamp,
    ) -> impl Iterator<Item = &'a PastAction> + 'a {
        let window = jiff::SignedDuration::try_from(self.breaker_window)
            .unwrap_or(jiff::SignedDuration::MAX);
        past.iter()
            .filter(move |p| p.at <= now && now.duration_since(p.at) < window)
    }

    /// How many more actions the breaker allows at `now` (`None`: no breaker).
    pub fn breaker_room(&self, past: &[PastAction], now: Timestamp) -> Option<usize> {
        (self.breaker_max > 0).then(|| {
            self.breaker_max
                .saturating_sub(self.actions_in_window(past, now).count())
        })
    }

    /// Whether the circuit breaker is open at `now`.
    pub fn breaker_open(&self, past: &[PastAction], now: Timestamp) -> bool {
        self.breaker_max > 0 && self.actions_in_window(past, now).count() >= self.breaker_max
    }

    /// The freeze `now` falls in, if any.
    pub fn frozen(&self, now: Timestamp) -> Option<&Freeze> {
        self.freezes.iter().find(|f| f.contains(now))
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
    fn matchers_parse_and_match_like_prometheus() {
        let m = Matcher::parse(r#"severity=~"critical|page""#).expect("valid");
        assert!(m.matches(&labels(&[("severity", "critical")])));
        assert!(m.matches(&labels(&[("severity", "page")])));
        assert!(
            !m.matches(&labels(&[("severity", "critical-ish")])),
            "anchored"
        );
        assert!(!m.matches(&labels(&[])));
        let m = Matcher::parse("team!=payments").expect("valid");
        assert!(m.matches(&labels(&[("team", "shop")])));
        assert!(!m.matches(&labels(&[("team", "payments")])));
        let m = Matcher::parse(r#"env!~"dev|test""#).expect("valid");
        assert!(m.matches(&labels(&[("env", "prod")])));
        assert!(!m.matches(&labels(&[("env", "dev")])));
        assert_eq!(m.to_string(), r#"env!~"dev|test""#);
        for bad in ["severity", "=x", r#"sev=~"(""#, "a b=c"] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn freezes_parse_and_contain() {
        let range = Freeze::parse("2026-12-24T00:00:00Z/2026-12-27T00:00:00Z").expect("valid");
        assert!(range.contains("2026-12-25T12:00:00Z".parse().unwrap()));
        assert!(
            !range.contains("2026-12-27T00:00:00Z".parse().unwrap()),
            "end excluded"
        );
        let weekend = Freeze::parse("sat,sun 00:00-24:00").expect("valid");
        // 2026-12-05 is a Saturday, 2026-12-07 a Monday.
        assert!(weekend.contains("2026-12-05T23:59:00Z".parse().unwrap()));
        assert!(!weekend.contains("2026-12-07T00:00:00Z".parse().unwrap()));
        let evening = Freeze::parse("fri 18:00-22:00").expect("valid");
        assert!(evening.contains("2026-12-04T18:00:00Z".parse().unwrap()));
        assert!(!evening.contains("2026-12-04T22:00:00Z".parse().unwrap()));
        assert_eq!(evening.to_string(), "fri 18:00-22:00 UTC");
        for bad in [
            "tomorrow",
            "2026-12-27T00:00:00Z/2026-12-24T00:00:00Z",
            "funday 00:00-01:00",
            "mon 10:00-09:00",
            "mon 10:00",
        ] {
            assert!(Freeze::parse(bad).is_err(), "{bad}");
        }
    }
}
