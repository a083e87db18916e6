//! Fault points made for testing: named places on the action path where the daemon stops and
//! waits to be killed, so that a test can `kill -9` it at exactly that point and check what a
//! restart makes of it.
//!
//! Off unless the environment variable `ROLLBACKD_FAULT_POINT` names a point; nothing in a
//! configuration file can turn one on. When the named point is reached, the daemon logs
//! `fault point <name> reached` at error level and the task that reached it waits forever.

use std::sync::OnceLock;

use tracing::error;

/// The intent is recorded; nothing has been written (a Deployment's undo may have read its
/// objects meanwhile).
pub const AFTER_INTENT: &str = "after-intent";
/// The write was sent and answered; nothing about it is recorded yet.
pub const AFTER_PATCH: &str = "after-patch";
/// The result is known and about to be recorded.
pub const BEFORE_RESULT: &str = "before-result";

/// The variable that arms one fault point.
pub const ENV: &str = "ROLLBACKD_FAULT_POINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Stops here for good when `name` is the armed point; returns at once otherwise.
pub async fn point(name: &str) {
    if armed() == Some(name) {
        error!(
            point = name,
            "fault point {name} reached; waiting to be killed"
        );
        std::future::pending::<()>().await;
    }
}
