//! The database a store test runs against: an SQLite file in a temporary directory, or a
//! fresh database on the test binary's PostgreSQL (`tests/pg`). [`on_both!`] runs a test on
//! each, so the store's suite holds for both backends.

use jiff::Timestamp;

use super::Store;
use crate::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
use crate::core::undo::RevisionRef;

#[path = "../../tests/pg/mod.rs"]
mod pg;

/// Where a test's store lives; [`TestDb::open`] may be called again to reopen it.
pub(super) struct TestDb {
    url: String,
    /// The SQLite file's directory, kept for as long as the test runs.
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub(super) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        TestDb {
            url: format!("sqlite://{}", dir.path().join("s.db").display()),
            _dir: Some(dir),
        }
    }

    pub(super) async fn postgres() -> TestDb {
        TestDb {
            url: pg::fresh_database().await,
            _dir: None,
        }
    }

    /// Another fresh database on the same backend.
    pub(super) async fn sibling(&self) -> TestDb {
        match self._dir {
            Some(_) => TestDb::sqlite(),
            None => TestDb::postgres().await,
        }
    }

    pub(super) async fn open(&self) -> Store {
        Store::open(&self.url).await.expect("open")
    }
}

/// For each named `async fn NAME(db: TestDb)`, a module `NAME` with two tests, `sqlite` and
/// `postgres`, that run it against each backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::store::test_db::TestDb;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(TestDb::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(TestDb::postgres().await).await
            }
        }
    )*};
}
pub(super) use on_both;

/// The store tests' clock: seconds after a fixed instant.
pub(super) fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid")
}

/// `HighErrorRate` about Deployment `default/<workload>`, started at `t(100)` and, when
/// resolved, ended at `t(200)`.
pub(super) fn alert_about(workload: &str, status: AlertStatus) -> Alert {
    let labels: LabelSet = [
        ("alertname", "HighErrorRate"),
        ("namespace", "default"),
        ("deployment", workload),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        source: AlertSource::Alertmanager,
        status,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: LabelSet::new(),
        starts_at: t(100),
        ends_at: (status == AlertStatus::Resolved).then(|| t(200)),
        generator_url: "http://prom/graph".into(),
        external_url: None,
    }
}

/// ReplicaSet `name` at `revision`, running `nginx:<revision>`.
pub(super) fn rev(name: &str, revision: i64) -> RevisionRef {
    RevisionRef {
        name: name.into(),
        uid: format!("uid-{name}"),
        revision,
        image: Some(format!("nginx:{revision}")),
    }
}
