//! The incident review a reviewer sees, in a real browser: a bad rollout of a sample app scraped
//! by a real Prometheus, detected by rollbackd's poller, undone, verified as recovered, and its
//! metric graph stored. Headless Chromium (Debian `chromium`) then loads the list and the
//! incident page as a reviewer would; the test asserts the verdict, the timeline relative to the
//! rollout, the image diff, and the SVG graph with its four marks and the threshold, and saves
//! screenshots under `target/tmp/e2e_review/`.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rollbackd::store::IncidentFilter;
use scenario::lab::{self, LabProcess, PrometheusLab};
use scenario::{self, SampleApp};
use support::{Reply, SlackSink};

const GOOD: &str = "shop/web:1.0";
const BAD: &str = "shop/web:2.0";
const LIMIT: Duration = Duration::from_secs(90);
const CHROMIUM: &str = "/usr/bin/chromium";

async fn wait_scraped(prom: &LabProcess) {
    prom.wait_ready(Duration::from_secs(30))
        .await
        .expect("prometheus ready");
    let url = format!(
        "{}/api/v1/query?query=count_over_time(up%5B1m%5D)",
        prom.url
    );
    wait_until("two scrapes", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let Ok(r) = reqwest::get(&url).await else {
                return false;
            };
            let Ok(body) = r.json::<serde_json::Value>().await else {
                return false;
            };
            body.pointer("/data/result/0/value/1")
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 2.0)
        }
    })
    .await;
}

/// Headless Chromium: `--dump-dom` of `url` (the DOM after the page loaded), bounded in time.
async fn dump_dom(url: &str) -> String {
    let out = chromium(&["--dump-dom", url]).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A PNG of `url` at a phone-ish or desktop `size` ("W,H").
async fn screenshot(url: &str, file: &Path, size: &str) {
    let _ = std::fs::remove_file(file);
    chromium(&[
        &format!("--screenshot={}", file.display()),
        &format!("--window-size={size}"),
        "--hide-scrollbars",
        url,
    ])
    .await;
    let png = std::fs::read(file).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
}

async fn chromium(args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("profile dir");
    let child = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            // Root has no user namespace sandbox here (CI runs as root).
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("chromium finished within 60s")
        .expect("chromium runs (Debian package `chromium`)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e_review");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_reads_the_incident_of_a_real_rollback_in_a_browser() {
    let env = sandbox_env().await;
    scenario::create(
        &env.api,
        scenario::deployment_manifest("default", "web", GOOD, 2),
    )
    .await
    .expect("web");
    scenario::wait_rolled_out(&env.api, "web", "1", Duration::from_secs(20))
        .await
        .expect("rolled out");
    let app = SampleApp::start(env.api.clone(), "web", &[BAD], 30)
        .await
        .expect("sample app");
    let rules = env.dir.path().join("rules.yml");
    std::fs::write(&rules, lab::fast_rules(lab::SHIPPED_RULES, "2s", "10s")).expect("rules");
    let prom = lab::start_prometheus(&PrometheusLab {
        target: app.addr,
        target_labels: &[("namespace", "default"), ("app", "web")],
        rule_files: &[],
        alertmanager: None,
    })
    .expect("prometheus starts");
    wait_scraped(&prom).await;
    let slack = SlackSink::start(Reply::Status(200, "ok".into(), None)).await;
    let hook = env.dir.path().join("hook");
    std::fs::write(&hook, format!("{}/services/T/B/x", slack.url())).expect("hook");
    let running = env
        .daemon(&format!(
            "[prometheus]\nurl = {:?}\nrules = [{:?}]\npoll_interval = \"1s\"\ngraph_after = \"1s\"\n[policy]\nverify_window = \"2m\"\n[notify.slack]\nwebhook_url_file = {:?}\n",
            prom.url,
            rules.display().to_string(),
            hook.display().to_string()
        ))
        .await;
    // A quiet stretch before the rollout, so the graph shows the value below the threshold.
    tokio::time::sleep(Duration::from_secs(5)).await;
    scenario::set_image(&env.api, "web", BAD)
        .await
        .expect("bad rollout");
    scenario::wait_rolled_out(&env.api, "web", "2", Duration::from_secs(20))
        .await
        .expect("bad live");
    wait_until("the undo", LIMIT, || {
        let done = !env.json_patches("web").is_empty();
        async move { done }
    })
    .await;

    // Verified as recovered once the alert resolves, and the graph fetched after that.
    let store = running.state.pipeline.store.clone();
    let id = store
        .list_incidents(&IncidentFilter::default())
        .await
        .expect("list")[0]
        .id;
    wait_until("recovered, with a graph fetched after", LIMIT, || {
        let store = store.clone();
        async move {
            let Ok(Some(detail)) = store.incident(id).await else {
                return false;
            };
            let Some(recovered) = detail
                .timeline
                .iter()
                .find(|e| e.outcome.as_deref() == Some("recovered"))
            else {
                return false;
            };
            let Ok(Some(graph)) = store.graph(id).await else {
                return false;
            };
            graph.fetched_at.to_string() > recovered.at
        }
    })
    .await;
    wait_until("the notifications delivered", LIMIT, || {
        let store = store.clone();
        async move {
            store.incident_outbox(id).await.is_ok_and(|rows| {
                !rows.is_empty()
                    && rows
                        .iter()
                        .all(|r| r.status == rollbackd::store::OutboxStatus::Delivered)
            })
        }
    })
    .await;
    let graph = store.graph(id).await.expect("read").expect("graph");
    assert_eq!(graph.threshold, Some(0.05));
    assert!(
        graph.samples.iter().any(|(_, v)| *v > 0.05),
        "the graph shows the error rate above the threshold: {:?}",
        graph.samples
    );
    assert!(!graph.expr.contains("> 0.05"), "{}", graph.expr);

    let base = format!("http://{}", running.addr);
    let list = dump_dom(&format!("{base}/")).await;
    assert!(
        list.contains(&format!("href=\"/incidents/{id}\"")),
        "{list}"
    );
    assert!(list.contains("deployment default/web"), "{list}");
    assert!(
        list.contains(" ago</time>") || list.contains("just now"),
        "{list}"
    );
    assert!(list.contains("title=\"20"), "exact UTC on hover: {list}");

    let page = dump_dom(&format!("{base}/incidents/{id}")).await;
    // The verdict.
    assert!(page.contains("class=\"verdict recovered\""), "{page}");
    assert!(
        page.contains("Rolled back, and the alerts recovered"),
        "{page}"
    );
    // The timeline, relative to the rollout, with no nanoseconds anywhere.
    let timeline = section(&page, "id=\"timeline\"", "</table>");
    for step in [
        "received",
        "correlated",
        "decision",
        "action",
        "result",
        "verify",
    ] {
        assert!(
            timeline.contains(&format!("<td>{step}</td>")),
            "{step}: {timeline}"
        );
    }
    assert!(
        regex::Regex::new(r">T\+\d+ s<").unwrap().is_match(timeline),
        "T+ times: {timeline}"
    );
    assert!(
        !regex::Regex::new(r"\d{2}:\d{2}:\d{2}\.\d{4,}")
            .unwrap()
            .is_match(&page),
        "no sub-second digits on the page"
    );
    // The diff: the image first, from the bad to the good one.
    let diff = section(&page, "id=\"diff\"", "</table>");
    let image = section(diff, "class=\"image\"", "</tr>");
    assert!(image.find(BAD) < image.find(GOOD), "{image}");
    assert!(image.find(BAD).is_some(), "{image}");
    // The exact patch and the API's answer.
    assert!(page.contains("class=\"patch\""), "{page}");
    assert!(page.contains("/spec/template"), "{page}");
    assert!(page.contains("class=\"answer\""), "{page}");
    assert!(page.contains("200 OK"), "{page}");
    // The graph: an SVG with the four marks and the threshold.
    let svg = section(&page, "<svg class=\"graph\"", "</svg>");
    for mark in ["rollout", "alert", "action", "recovery"] {
        assert!(
            svg.contains(&format!("data-mark=\"{mark}\"")),
            "{mark}: {svg}"
        );
    }
    assert!(svg.contains("data-threshold=\"0.05\""), "{svg}");
    assert!(svg.contains("<polyline"), "{svg}");
    assert!(
        page.contains("when rollbackd acted (threshold &gt; 0.05)")
            || page.contains("when rollbackd acted (threshold &#62; 0.05)"),
        "the value at the decision: {page}"
    );
    // The verification and the notifications.
    assert!(
        page.contains("class=\"verification\">recovered at"),
        "{page}"
    );
    let notifications = section(&page, "id=\"notifications\"", "</table>");
    assert!(notifications.contains("<td>slack</td>"), "{notifications}");
    assert!(notifications.contains(">delivered<"), "{notifications}");
    // Who acted.
    assert!(page.contains("acted as"), "{page}");
    assert!(page.contains("rollbackd "), "{page}");

    let dir = artefacts();
    screenshot(
        &format!("{base}/incidents/{id}"),
        &dir.join("incident.png"),
        "1100,2400",
    )
    .await;
    screenshot(
        &format!("{base}/incidents/{id}"),
        &dir.join("incident-phone.png"),
        "390,2400",
    )
    .await;
    screenshot(&format!("{base}/"), &dir.join("list.png"), "1100,600").await;
    screenshot(
        &format!("{base}/incidents/{id}"),
        &dir.join("incident-top.png"),
        "960,1250",
    )
    .await;
    println!("screenshots in {}", dir.display());
}

/// The text from `start` to the next `end` after it.
fn section<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(start)
        .unwrap_or_else(|| panic!("{start} not on the page: {page}"));
    let rest = &page[from..];
    &rest[..rest.find(end).map_or(rest.len(), |i| i + end.len())]
}
