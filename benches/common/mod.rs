//! What the benchmarks share: a daemon process that dies with its handle, its memory as
//! `/proc` reports it, and percentiles of sorted samples.

#![allow(dead_code)]

use std::process::Child;

/// A child process (the release binary) killed and reaped when dropped. Spawned as the leader
/// of its own process group (`process_group(0)`), the whole group is killed: a profiler that
/// wraps the daemon (`STORM_DAEMON_WRAPPER`) does not leave the daemon behind.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // Fails harmlessly when the child leads no group of its own.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/PID/status in MiB (VmRSS, VmHWM, RssAnon, RssFile).
pub fn mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The `p` quantile (0 to 1) of samples sorted ascending, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The values of the series `name` in the text exposition `metrics`, summed over labels;
/// `None` when there is no such series.
pub fn series_total(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// The `_sum` and `_count` of a Prometheus histogram `name` in the text exposition `metrics`,
/// each summed over labels.
pub fn histogram_totals(metrics: &str, name: &str) -> (f64, f64) {
    let total = |suffix: &str| series_total(metrics, &format!("{name}{suffix}")).unwrap_or(0.0);
    (total("_sum"), total("_count"))
}

/// The mean of histogram `name` over the observations made between two scrapes, in ms; NaN
/// without observations. `before` may be empty: then it is the mean of all of `after`.
pub fn histogram_mean_ms_between(before: &str, after: &str, name: &str) -> f64 {
    let (sum0, count0) = histogram_totals(before, name);
    let (sum1, count1) = histogram_totals(after, name);
    if count1 - count0 <= 0.0 {
        f64::NAN
    } else {
        1000.0 * (sum1 - sum0) / (count1 - count0)
    }
}

/// The mean of a Prometheus histogram `name` in the text exposition `metrics`, in ms; NaN
/// without observations.
pub fn histogram_mean_ms(metrics: &str, name: &str) -> f64 {
    histogram_mean_ms_between("", metrics, name)
}

/// CPU time (user and system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from 0 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}
