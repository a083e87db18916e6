//! The poller against a real Prometheus (`/usr/bin/prometheus`, started per test on 127.0.0.1
//! with a free port and a temporary data directory) scraping a tiny in-test exporter every
//! second. A missing binary fails the test with install advice; every wait is bounded and the
//! child process is killed when the test ends, also on panic.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use rollbackd::core::alert::{AlertSource, AlertStatus};
use rollbackd::poller::prom::{PromAuth, PromClient};
use rollbackd::poller::rules::{AlertingRule, LoadedRules, parse_rules_str};
use rollbackd::poller::state::{Observation, Outcome, Phase, RuleState};
use rollbackd::poller::{Poller, PollerEvent, PollerSettings};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const WAIT: Duration = Duration::from_secs(60);

/// The exporter: every scrape adds 90 good requests and `errors_per_scrape` 5xx ones.
#[derive(Default)]
struct Exporter {
    ok: AtomicU64,
    errors: AtomicU64,
    errors_per_scrape: AtomicU64,
}

async fn start_exporter() -> (Arc<Exporter>, u16) {
    let state = Arc::new(Exporter::default());
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let s = shared.clone();
            async move {
                let ok = s.ok.fetch_add(90, Ordering::SeqCst) + 90;
                let per = s.errors_per_scrape.load(Ordering::SeqCst);
                let errors = s.errors.fetch_add(per, Ordering::SeqCst) + per;
                format!(
                    "# TYPE http_requests_total counter\n\
                     http_requests_total{{code=\"200\"}} {ok}\n\
                     http_requests_total{{code=\"500\"}} {errors}\n"
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let port = listener.local_addr().expect("exporter address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, port)
}

/// A Prometheus child process, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(exporter_port: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install it with `apt-get install -y prometheus`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: checkout\n    static_configs:\n\
             \x20     - targets: ['127.0.0.1:{exporter_port}']\n\
             \x20       labels: {{namespace: shop, app: checkout}}\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
    listener.local_addr().expect("local address").port()
}

fn client(url: &str) -> PromClient {
    PromClient::new(url, PromAuth::None, Duration::from_secs(5)).expect("client")
}

/// Polls `up` until the exporter has been scraped successfully (bounded).
async fn wait_until_scraping(prom: &Prometheus) {
    let c = client(&prom.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = c.query("up{job=\"checkout\"} == 1", Timestamp::now()).await
            && !r.samples.is_empty()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not scrape the exporter within {WAIT:?}; its log:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The shipped HighErrorRate rule with a 5s range and a 3s `for`, to run in seconds.
fn fast_error_rate_rule() -> AlertingRule {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/rollbackd.yml"))
        .expect("read rules/rollbackd.yml");
    let loaded = parse_rules_str(Path::new("rules/rollbackd.yml"), &text).expect("rules load");
    let mut rule = loaded
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .find(|r| r.alert == "HighErrorRate")
        .expect("HighErrorRate is shipped");
    assert!(rule.expr.contains("[5m]"));
    rule.expr = rule.expr.replace("[5m]", "[5s]");
    rule.for_ = Duration::from_secs(3);
    rule
}

fn settings(url: &str) -> PollerSettings {
    PollerSettings {
        url: url.to_string(),
        rule_files: Vec::new(),
        poll_interval: Duration::from_millis(500),
        query_timeout: Duration::from_secs(5),
        auth: PromAuth::None,
    }
}

fn poller_with(url: &str, yaml: &str) -> Poller {
    let loaded = parse_rules_str(Path::new("test.yml"), yaml).expect("test rules load");
    Poller::from_rules(settings(url), loaded).expect("poller")
}

#[tokio::test]
async fn client_parses_real_answers() {
    let (_exporter, port) = start_exporter().await;
    let prom = Prometheus::start(port);
    wait_until_scraping(&prom).await;
    let c = client(&prom.url);
    let now = Timestamp::now();

    let up = c.query("up", now).await.expect("up");
    assert_eq!(up.samples.len(), 1, "{up:?}");
    let labels = &up.samples[0].metric;
    assert_eq!(labels["__name__"], "up");
    assert_eq!(labels["job"], "checkout");
    assert_eq!(labels["namespace"], "shop");
    assert_eq!(labels["app"], "checkout");
    assert_eq!(labels["instance"], format!("127.0.0.1:{port}"));
    assert_eq!(up.samples[0].value, 1.0);

    let scalar = c.query("scalar(up)", now).await.expect("scalar");
    assert_eq!(scalar.samples.len(), 1);
    assert!(scalar.samples[0].metric.is_empty());
    assert_eq!(scalar.samples[0].value, 1.0);

    let nan = c.query("vector(0) / 0", now).await.expect("NaN");
    assert!(nan.samples[0].value.is_nan());
    let inf = c.query("vector(1) / 0", now).await.expect("+Inf");
    assert_eq!(inf.samples[0].value, f64::INFINITY);
    let neg = c.query("vector(-1) / 0", now).await.expect("-Inf");
    assert_eq!(neg.samples[0].value, f64::NEG_INFINITY);
    let none = c
        .query("up{job=\"nope\"}", now)
        .await
        .expect("empty vector");
    assert!(none.samples.is_empty());
}

#[tokio::test]
async fn bad_query_is_inconclusive_not_a_fire() {
    let (_exporter, port) = start_exporter().await;
    let prom = Prometheus::start(port);
    wait_until_scraping(&prom).await;
    let direct = client(&prom.url)
        .query("sum(rate(up[1m])", Timestamp::now())
        .await;
    let err = direct.expect_err("a syntax error is an error");
    assert!(
        err.to_string().contains("400") && err.to_string().contains("bad_data"),
        "{err}"
    );

    let yaml =
        "groups:\n  - name: g\n    rules:\n      - alert: Broken\n        expr: sum(rate(up[1m])\n";
    let mut poller = poller_with(&prom.url, yaml);
    let events = poller.poll_once(Timestamp::now()).await;
    match events.as_slice() {
        [PollerEvent::Inconclusive { rule, reason }] => {
            assert_eq!(rule, "g/Broken");
            assert!(reason.contains("bad_data"), "{reason}");
        }
        other => panic!("expected one Inconclusive event, got {other:?}"),
    }
    assert_eq!(
        poller.poll_once(Timestamp::now()).await,
        [],
        "reported once, never fired"
    );
}

#[tokio::test]
async fn error_rate_rule_goes_pending_then_firing() {
    let (exporter, port) = start_exporter().await;
    exporter.errors_per_scrape.store(10, Ordering::SeqCst); // 10% of requests fail
    let prom = Prometheus::start(port);
    wait_until_scraping(&prom).await;
    let c = client(&prom.url);
    let rule = fast_error_rate_rule();
    let for_ = rule.for_;
    let mut state = RuleState::new(rule, &prom.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut pending_at = None;
    let fired = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no firing alert within {WAIT:?}"
        );
        let now = Timestamp::now();
        let answer = c.query(&state.rule().expr, now).await.expect("query");
        let step = match state.observe(now, Observation::Samples(&answer.samples)) {
            Outcome::Conclusive(step) => step,
            Outcome::Inconclusive(why) => panic!("inconclusive: {why}"),
        };
        if let Some(first) = step.firing.into_iter().next() {
            break first;
        }
        if let Some(instance) = state.instances().values().next() {
            assert_eq!(instance.phase, Phase::Pending);
            pending_at.get_or_insert(instance.active_at);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pending_at = pending_at.expect("the alert was pending before it fired");
    let waited = fired.starts_at.duration_since(pending_at);
    assert!(
        waited >= jiff::SignedDuration::try_from(for_).expect("small"),
        "fired after {waited}"
    );
    assert_eq!(fired.status, AlertStatus::Firing);
    assert_eq!(fired.source, AlertSource::Prometheus);
    assert_eq!(fired.labels["alertname"], "HighErrorRate");
    assert_eq!(fired.labels["namespace"], "shop");
    assert_eq!(fired.labels["app"], "checkout");
    assert_eq!(fired.labels["severity"], "critical");
    assert_eq!(
        fired.annotations["summary"],
        "checkout in shop answers 10% of requests with 5xx"
    );
    assert!(
        fired
            .generator_url
            .starts_with(&format!("{}/graph?g0.expr=", prom.url))
    );

    // The same rule through Poller::run: a firing alert arrives on the channel.
    let loaded = LoadedRules {
        groups: vec![rollbackd::poller::RuleGroup {
            name: "test-http".into(),
            file: "test.yml".into(),
            interval: None,
            query_offset: None,
            rules: vec![state.rule().clone()],
        }],
        notes: Vec::new(),
    };
    let poller = Poller::from_rules(settings(&prom.url), loaded).expect("poller");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(poller.run(tx));
    let alert = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await.expect("poller runs") {
                PollerEvent::Alerts(alerts) if !alerts.is_empty() => break alerts[0].clone(),
                PollerEvent::Alerts(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .expect("firing alert from Poller::run within the bound");
    assert_eq!(alert.labels, fired.labels);
    assert_eq!(alert.status, AlertStatus::Firing);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns once the receiver is gone")
        .expect("run did not panic");
}

#[tokio::test]
async fn stopped_prometheus_gives_inconclusive_and_no_alert() {
    let (_exporter, port) = start_exporter().await;
    let mut prom = Prometheus::start(port);
    wait_until_scraping(&prom).await;
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: Up\n        expr: up == 1\n        labels:\n          severity: warning\n";
    let mut poller = poller_with(&prom.url, yaml);
    let events = poller.poll_once(Timestamp::now()).await;
    assert!(
        matches!(events.as_slice(), [PollerEvent::Alerts(a)] if a.len() == 1 && a[0].status == AlertStatus::Firing),
        "{events:?}"
    );

    prom.stop();
    let events = poller.poll_once(Timestamp::now()).await;
    match events.as_slice() {
        [PollerEvent::Inconclusive { rule, reason }] => {
            assert_eq!(rule, "g/Up");
            assert!(reason.contains("cannot reach Prometheus"), "{reason}");
        }
        other => {
            panic!("expected only an Inconclusive event (no alert, no resolve), got {other:?}")
        }
    }
    assert_eq!(
        poller.poll_once(Timestamp::now()).await,
        [],
        "nothing more while it stays down"
    );
}
