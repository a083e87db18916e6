//! How long the watches wait for the API server, all derived from `kubernetes.stale_after`
//! so that one setting bounds how long rollbackd can go on deciding from a stale index.
//!
//! With the default 90s: each watch request asks the server to end it after 30s (a real
//! kube-apiserver also sends a BOOKMARK before it does), so a healthy watch hears from the
//! server at least every 30s even in a quiet cluster. A connection silent for 45s (half-open:
//! no event, no bookmark, no end) is dropped, the watch is marked failing, and it relists over
//! a new connection; no single call may take longer than 45s either. A watch that has heard
//! nothing for 90s is stale. Retries back off exponentially up to 30s.

use std::time::Duration;

/// The waits of every watch loop and of discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// `timeoutSeconds` of each watch request.
    pub watch_seconds: u32,
    /// A watch stream silent for this long is dropped.
    pub idle: Duration,
    /// The longest a list page, a watch request or a discovery request may take to answer.
    pub call: Duration,
    /// The longest pause between two retries.
    pub backoff_max: Duration,
}

impl Timings {
    /// `watch_timeout` (`kubernetes.watch_timeout`) is honoured when it is shorter than a
    /// third of `stale_after`.
    pub fn new(stale_after: Duration, watch_timeout: Duration) -> Timings {
        let third = stale_after / 3;
        let watch = watch_timeout.min(third).as_secs().max(1);
        Timings {
            watch_seconds: u32::try_from(watch).unwrap_or(u32::MAX),
            idle: (stale_after / 2).max(Duration::from_secs(watch) + Duration::from_millis(500)),
            call: stale_after / 2,
            backoff_max: third.clamp(Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

/// Exponential backoff with jitter: 200ms, doubling, up to a maximum; reset after a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(200);

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff { next: FIRST, max }
    }

    /// The pause before the next retry: between 80% and 100% of the current step, so that
    /// watches failing together do not all retry at the same instant.
    pub fn next_pause(&mut self) -> Duration {
        let step = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(rand::random_range(0.8..=1.0))
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_notice_a_silent_connection_within_a_minute() {
        let t = Timings::new(Duration::from_secs(90), Duration::from_secs(290));
        assert_eq!(t.watch_seconds, 30);
        assert_eq!(t.idle, Duration::from_secs(45));
        assert_eq!(t.call, Duration::from_secs(45));
        assert_eq!(t.backoff_max, Duration::from_secs(30));
        let short = Timings::new(Duration::from_secs(90), Duration::from_secs(10));
        assert_eq!(short.watch_seconds, 10);
        let tests = Timings::new(Duration::from_secs(3), Duration::from_secs(290));
        assert_eq!(tests.watch_seconds, 1);
        assert!(tests.idle > Duration::from_secs(1));
        assert_eq!(tests.backoff_max, Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let pauses: Vec<Duration> = (0..5).map(|_| b.next_pause()).collect();
        assert!(pauses[0] <= FIRST && pauses[0] >= FIRST.mul_f64(0.8));
        assert!(pauses[2] <= Duration::from_millis(800));
        assert!(pauses[4] <= Duration::from_secs(1) && pauses[4] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_pause() <= FIRST);
    }
}
