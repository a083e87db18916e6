//! Shared pieces of the notification tests: a Slack stand-in (axum on 127.0.0.1), a real SMTP
//! server (Debian's aiosmtpd, through `smtp_sink.py`), a Block Kit limit checker written from
//! Slack's documentation independently of the renderer, a store with an incident to queue
//! messages on, and a log capture for the redaction checks. Every wait is bounded.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rollbackd::core::alert::{Alert, AlertSource, AlertStatus, Fingerprint, LabelSet};
use rollbackd::core::engine::{Decision, Outcome, WorkloadRef};
use rollbackd::notify::Notification;
use rollbackd::store::{NewMessage, Store};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Slack stand-in

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Value,
    pub raw: String,
    pub at: Instant,
}

/// How the stand-in answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, a body, and `Retry-After` seconds when given.
    Status(u16, String, Option<u64>),
    /// Slack's Web API success: `{"ok":true,"channel":…,"ts":…}` with a fresh ts.
    PostOk,
    /// `{"ok":false,"error":…}` with HTTP 200.
    ApiError(&'static str),
    /// No answer until the connection is dropped (at most a minute).
    Hang,
}

struct SinkState {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Reply,
    next_ts: u64,
}

#[derive(Clone)]
pub struct SlackSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
}

impl SlackSink {
    /// Starts on 127.0.0.1 (port 0: a free one) answering `default` unless scripted.
    pub async fn start(default: Reply) -> SlackSink {
        Self::start_on(0, default).await
    }

    pub async fn start_on(port: u16, default: Reply) -> SlackSink {
        let state = Arc::new(Mutex::new(SinkState {
            received: Vec::new(),
            script: VecDeque::new(),
            default,
            next_ts: 100,
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the Slack stand-in");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackSink { addr, state }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers, in order, before the default applies again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Waits until `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {n} Slack requests, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(state): State<Arc<Mutex<SinkState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let channel = parsed["channel"].as_str().unwrap_or("").to_string();
    let (reply, ts) = {
        let mut s = match state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        s.received.push(Received {
            method,
            path: uri.path().to_string(),
            content_type: header("content-type"),
            authorization: header("authorization"),
            body: parsed,
            raw,
            at: Instant::now(),
        });
        let reply = s.script.pop_front().unwrap_or_else(|| s.default.clone());
        s.next_ts += 1;
        (reply, s.next_ts)
    };
    match reply {
        Reply::Status(code, body, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert(
                    "retry-after",
                    secs.to_string().parse().expect("header value"),
                );
            }
            response
        }
        Reply::PostOk => {
            // Slack answers with the channel's ID; a reply goes to the ID it was given.
            let id = match channel.as_str() {
                "#oncall" => "C0ONCALL".to_string(),
                "#payments-oncall" => "C0PAYMENTS".to_string(),
                other => other.to_string(),
            };
            axum::Json(
                json!({"ok": true, "channel": id, "ts": format!("1767000000.{ts:06}"),
                "message": {"type": "message"}}),
            )
            .into_response()
        }
        Reply::ApiError(error) => axum::Json(json!({"ok": false, "error": error})).into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Block Kit limits, from Slack's reference (not from the renderer)

/// Checks a message body against Slack's documented Block Kit limits: at most 50 blocks; a
/// header's plain_text at most 150 characters; a section's text at most 3000, at most 10
/// fields of at most 2000 each; a button's text at most 75 and its url at most 3000; context at
/// most 10 elements; actions at most 25 elements; every text object non-empty and typed.
pub fn check_block_kit(body: &Value) -> Result<(), String> {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let text_object = |v: &Value, max: usize, plain_only: bool, what: &str| -> Result<(), String> {
        let kind = v["type"].as_str().unwrap_or("");
        if !(kind == "plain_text" || (!plain_only && kind == "mrkdwn")) {
            return Err(format!("{what}: bad text type {kind:?}"));
        }
        let n = len(&v["text"]);
        if n == 0 || n > max {
            return Err(format!("{what}: text length {n} not in 1..={max}"));
        }
        Ok(())
    };
    let text = body["text"].as_str().ok_or("no top-level text fallback")?;
    if text.is_empty() {
        return Err("empty text fallback".into());
    }
    let blocks = body["blocks"].as_array().ok_or("no blocks")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for (i, b) in blocks.iter().enumerate() {
        let what = format!("block {i}");
        match b["type"].as_str() {
            Some("header") => text_object(&b["text"], 150, true, &what)?,
            Some("section") => {
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err(format!("{what}: section without text or fields"));
                }
                if let Some(t) = b.get("text") {
                    text_object(t, 3000, false, &what)?;
                }
                if let Some(fields) = b.get("fields") {
                    let fields = fields.as_array().ok_or("fields not an array")?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(format!("{what}: {} fields", fields.len()));
                    }
                    for f in fields {
                        text_object(f, 2000, false, &what)?;
                    }
                }
            }
            Some("context") => {
                let elements = b["elements"].as_array().ok_or("context without elements")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("{what}: {} context elements", elements.len()));
                }
                for e in elements {
                    text_object(e, 3000, false, &what)?;
                }
            }
            Some("actions") => {
                let elements = b["elements"].as_array().ok_or("actions without elements")?;
                if elements.is_empty() || elements.len() > 25 {
                    return Err(format!("{what}: {} action elements", elements.len()));
                }
                for e in elements {
                    if e["type"] != "button" {
                        return Err(format!("{what}: not a button"));
                    }
                    text_object(&e["text"], 75, true, &what)?;
                    let url = e["url"].as_str().unwrap_or("");
                    if url.chars().count() > 3000 || !url.starts_with("http") {
                        return Err(format!("{what}: bad button url"));
                    }
                    if len(&e["action_id"]) > 255 {
                        return Err(format!("{what}: action_id too long"));
                    }
                }
            }
            Some("divider") => {}
            other => return Err(format!("{what}: unexpected block type {other:?}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A store with incidents to queue messages on

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

pub fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn mk_alert(pairs: &[(&str, &str)], starts: &str) -> Alert {
    let labels = labels(pairs);
    Alert {
        source: AlertSource::Alertmanager,
        status: AlertStatus::Firing,
        fingerprint: Fingerprint::of(&labels),
        labels,
        annotations: labels_annotations(),
        starts_at: ts(starts),
        ends_at: None,
        generator_url: "http://prometheus.example:9090/graph?g0.expr=rate%28errors%5B5m%5D%29"
            .into(),
        external_url: Some("http://alertmanager.example:9093".into()),
    }
}

fn labels_annotations() -> LabelSet {
    labels(&[("summary", "5xx ratio 12% > 5% <for 2m> & rising")])
}

/// A notable "paused" decision about deployment NS/NAME (no action), as the pipeline would
/// record it; its notification is built with `Notification::about`, like the pipeline does.
pub fn paused_decision(namespace: &str, name: &str) -> Decision {
    Decision {
        outcome: Outcome::Paused,
        reason: format!(
            "deployment {namespace}/{name} is paused; kubectl refuses to roll back a paused deployment"
        ),
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }),
        rollout: None,
        command: None,
    }
}

pub async fn open_store(dir: &Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .expect("store opens")
}

/// Records `alert` with `decision` at `at` and queues its notification to (channel,
/// destination); returns the incident id.
pub async fn queue(
    store: &Store,
    alert: &Alert,
    decision: &Decision,
    at: &str,
    targets: &[(&str, &str)],
) -> i64 {
    let at = ts(at);
    let received = store
        .record_alerts(std::slice::from_ref(alert), at)
        .await
        .expect("alert");
    let alert_id = received[0].alert_id;
    let recorded = store
        .record_decision_and_notify(alert_id, alert, decision, at, |incident_id| {
            let n = Notification::about(
                incident_id,
                alert,
                decision,
                None,
                Some("https://rollbackd.example"),
                at,
            );
            targets
                .iter()
                .map(|(channel, destination)| NewMessage {
                    channel: channel.to_string(),
                    destination: destination.to_string(),
                    event: format!("decision:{alert_id}"),
                    payload: serde_json::to_value(&n).expect("json"),
                    deadline: Timestamp::now() + jiff::SignedDuration::from_hours(1),
                })
                .collect()
        })
        .await
        .expect("decision")
        .expect("fresh");
    recorded.incident_id
}

/// Polls the outbox until every row is delivered or failed; panics after `limit`.
pub async fn wait_settled(store: &Store, limit: Duration) -> Vec<rollbackd::store::OutboxRow> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = store.outbox().await.expect("outbox");
        if !rows.is_empty()
            && rows
                .iter()
                .all(|r| r.status != rollbackd::store::OutboxStatus::Pending)
        {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "outbox not settled after {limit:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `notify` timeline entries of an incident, messages only.
pub async fn notify_entries(store: &Store, incident_id: i64) -> Vec<String> {
    store
        .incident(incident_id)
        .await
        .expect("read")
        .expect("incident")
        .timeline
        .into_iter()
        .filter(|e| e.kind == "notify")
        .map(|e| e.message)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Real SMTP server

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// Starts aiosmtpd on 127.0.0.1:`port`, writing messages into `dir`; with `auth`, it
    /// requires that user and password.
    pub fn start(port: u16, dir: &Path, auth: Option<(&str, &str)>) -> SmtpSink {
        std::fs::create_dir_all(dir).expect("sink dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((user, password)) = auth {
            cmd.env("SMTP_SINK_USER", user)
                .env("SMTP_SINK_PASSWORD", password);
        }
        let mut child = cmd
            .spawn()
            .expect("/usr/bin/python3 runs (Debian's python3-aiosmtpd is required)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the SMTP sink says ready within 20s");
        assert_eq!(line.trim(), "ready", "SMTP sink failed to start: {line:?}");
        SmtpSink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("sink dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).expect("read message"))
                    .expect("message JSON")
            })
            .collect()
    }

    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {n} mails, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
