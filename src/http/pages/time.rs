//! Times as a reviewer reads them: "12 min ago" in lists, "T+6 s" on a timeline (relative to
//! the rollout), and the exact UTC time (to the second, never nanoseconds) on hover.

use jiff::Timestamp;

/// "2026-12-01 00:01:52 UTC"; the text itself when it is not a timestamp.
pub fn utc(t: &str) -> String {
    match t.parse::<Timestamp>() {
        Ok(ts) => format!("{} UTC", ts.strftime("%Y-%m-%d %H:%M:%S")),
        Err(_) => t.to_string(),
    }
}

/// Timestamps inside a sentence ("current since 2026-12-01T00:01:45.344228292Z") as a
/// reviewer reads them: "2026-12-01 00:01:45 UTC".
pub fn tidy(text: &str) -> String {
    static STAMP: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z")
            .expect("valid regex")
    });
    STAMP.replace_all(text, "$1 $2 UTC").into_owned()
}

/// "just now", "45 s ago", "12 min ago", "3 h ago", "5 d ago"; "in 2 min" for a future time.
pub fn ago(t: &str, now: Timestamp) -> String {
    let Ok(ts) = t.parse::<Timestamp>() else {
        return t.to_string();
    };
    let secs = now.duration_since(ts).as_secs();
    if secs.abs() < 10 {
        return "just now".into();
    }
    let span = span(secs.unsigned_abs());
    if secs > 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// "T+0", "T+6 s", "T+2 min 5 s", "T−40 s": `t` relative to `origin`.
pub fn offset(t: &str, origin: Option<Timestamp>) -> String {
    let (Ok(ts), Some(origin)) = (t.parse::<Timestamp>(), origin) else {
        return String::new();
    };
    let d = ts.duration_since(origin);
    // Rounded to the nearest second.
    let millis = d.as_millis();
    let whole = ((millis.unsigned_abs() + 500) / 1000) as u64;
    if whole == 0 {
        return "T+0".into();
    }
    let sign = if millis < 0 { "T−" } else { "T+" };
    format!("{sign}{}", precise(whole))
}

/// "45 s", "12 min", "3 h", "5 d": the largest unit, rounded down.
fn span(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// "6 s", "2 min 5 s", "1 h 3 min": two units at most.
fn precise(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 && s % 60 == 0 => format!("{} min", s / 60),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "2026-12-01T00:01:45.344228292Z";

    #[test]
    fn exact_times_drop_the_nanoseconds() {
        assert_eq!(utc(ORIGIN), "2026-12-01 00:01:45 UTC");
        assert_eq!(utc("not a time"), "not a time");
    }

    #[test]
    fn sentences_lose_their_nanoseconds() {
        assert_eq!(
            tidy("current since 2026-12-01T00:01:45.344228292Z, started 2026-12-01T00:01:51Z"),
            "current since 2026-12-01 00:01:45 UTC, started 2026-12-01 00:01:51 UTC"
        );
    }

    #[test]
    fn list_times_are_relative_to_now() {
        let now: Timestamp = "2026-12-01T00:13:46Z".parse().unwrap();
        assert_eq!(ago(ORIGIN, now), "12 min ago");
        assert_eq!(ago("2026-12-01T00:13:40Z", now), "just now");
        assert_eq!(ago("2026-12-01T00:13:30Z", now), "16 s ago");
        assert_eq!(ago("2026-11-28T00:13:40Z", now), "3 d ago");
        assert_eq!(ago("2026-12-01T00:15:46Z", now), "in 2 min");
    }

    #[test]
    fn timeline_times_are_relative_to_the_rollout() {
        let origin = Some(ORIGIN.parse().unwrap());
        assert_eq!(offset(ORIGIN, origin), "T+0");
        assert_eq!(offset("2026-12-01T00:01:51.344Z", origin), "T+6 s");
        assert_eq!(offset("2026-12-01T00:01:45.5Z", origin), "T+0");
        assert_eq!(offset("2026-12-01T00:03:50.4Z", origin), "T+2 min 5 s");
        assert_eq!(offset("2026-12-01T00:01:00.5Z", origin), "T−45 s");
        assert_eq!(offset(ORIGIN, None), "");
    }
}
