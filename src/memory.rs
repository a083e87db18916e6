//! Giving memory back to the system after a storm.
//!
//! glibc's allocator keeps the memory a burst of alerts freed, in per-thread arenas, for the
//! next burst: measured on the storm bench, the daemon's RSS grew by a fifth over three storms
//! while its heap did not. `malloc_trim` returns the free pages of every arena. It walks all of
//! them, so the worker calls it only once a large backlog is decided, on a blocking thread.

use tracing::debug;

/// Returns the allocator's free pages to the system (glibc only; elsewhere nothing).
pub async fn give_back() {
    let before = resident_kib();
    let trimmed = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
    debug!(
        trimmed,
        before_kib = before,
        after_kib = resident_kib(),
        "gave unused memory back after a backlog was decided"
    );
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and may be called from any thread at any time;
    // glibc locks each arena while it trims it.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// The process's resident set in KiB, from `/proc/self/status` (0 where there is none).
pub fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
