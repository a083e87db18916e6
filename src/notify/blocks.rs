//! Slack Block Kit rendering of a [`Notification`], within Slack's documented limits.
//!
//! Layout: a header (verdict and workload), a section with what was done and why, a section of
//! fields (workload, outcome, revisions, action, incident), one section per alert (annotations,
//! labels), a context line, and link buttons (incident page, alert source, Alertmanager). The
//! top-level `text` is the plain fallback shown in notifications and by clients without blocks.
//!
//! Every string from a peer (labels, annotations, reasons quoting the API) is escaped for
//! mrkdwn (`&`, `<`, `>`: no injected mentions or links) and cut to the limit of the field it
//! lands in, never inside an escape or a link. URLs that [`safe_link`] refuses or that are too
//! long become no button and no link.

use serde_json::{Value, json};

use super::message::{one_line, truncate};
use super::{MessageKind, Notification};
use crate::link::safe_link;

/// Slack's limits (Block Kit reference: blocks, header, section, button).
pub const MAX_BLOCKS: usize = 50;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
pub const MAX_ACTION_ELEMENTS: usize = 25;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_URL: usize = 3000;
/// Slack cuts `text` at 40,000 characters; a fallback that long helps no one.
pub const MAX_FALLBACK_TEXT: usize = 3000;
/// Alerts shown one section each; the rest are counted.
pub const MAX_ALERTS_SHOWN: usize = 10;

/// The JSON body of a message (without `channel`/`thread_ts`, which the transport adds).
pub fn message(n: &Notification) -> Value {
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": header_text(n), "emoji": true}
        }),
        section(&format!(
            "*{}*\n*Why* (`{}`): {}{}",
            escape(&n.summary()),
            n.outcome.code(),
            escape(n.why()),
            n.acted_because()
                .map(|d| format!("\n*Acted because:* {}", escape(d)))
                .unwrap_or_default()
        )),
    ];
    let fields: Vec<Value> = n
        .facts()
        .into_iter()
        .take(MAX_FIELDS)
        .map(|(label, value)| {
            let value = match (label, &n.link) {
                ("Incident", Some(link)) if n.kind == MessageKind::Outcome && linkable(link) => {
                    format!("<{link}|#{}>", n.incident_id)
                }
                _ => escape(&value),
            };
            mrkdwn(&truncate_mrkdwn(
                &format!("*{label}*\n{value}"),
                MAX_FIELD_TEXT,
            ))
        })
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));
    for alert in n.alerts.iter().take(MAX_ALERTS_SHOWN) {
        let mut text = format!(
            ":rotating_light: *{}* {} since {} (via {})",
            escape(&alert.name),
            alert.status.as_str(),
            alert.starts_at,
            alert.source
        );
        for (k, v) in &alert.annotations {
            text.push_str(&format!("\n>{}: {}", escape(k), escape(&one_line(v))));
        }
        let labels: Vec<String> = alert
            .labels
            .iter()
            .map(|(k, v)| format!("`{}={}`", code(k), code(v)))
            .collect();
        text.push('\n');
        text.push_str(&labels.join(" "));
        blocks.push(section(&text));
    }
    let mut context = vec![mrkdwn(&escape(&n.footer()))];
    if n.alerts.len() > MAX_ALERTS_SHOWN {
        context.push(mrkdwn(&format!(
            "{} more alerts are on the incident page",
            n.alerts.len() - MAX_ALERTS_SHOWN
        )));
    }
    if n.kind == MessageKind::Test {
        context.push(mrkdwn(
            "This is a test from `rollbackd notify test`; nothing happened.",
        ));
    }
    context.truncate(MAX_CONTEXT_ELEMENTS);
    blocks.push(json!({"type": "context", "elements": context}));
    let buttons = buttons(n);
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    blocks.truncate(MAX_BLOCKS);
    json!({
        "text": fallback(n),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// The header: "ROLLED BACK default/checkout", plain text, one line.
fn header_text(n: &Notification) -> String {
    truncate(
        &one_line(&format!("{} {}", n.verdict(), n.target())),
        MAX_HEADER_TEXT,
    )
}

/// The notification text: what a phone's lock screen shows.
fn fallback(n: &Notification) -> String {
    let revs = n
        .revisions_short()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    truncate_mrkdwn(
        &escape(&one_line(&format!(
            "{} {}: {}{revs}. {}",
            n.verdict(),
            n.target(),
            n.alert_names(),
            n.why()
        ))),
        MAX_FALLBACK_TEXT,
    )
}

fn buttons(n: &Notification) -> Vec<Value> {
    let mut out = Vec::new();
    if n.kind == MessageKind::Outcome
        && let Some(link) = &n.link
    {
        push_button(
            &mut out,
            &format!("Incident #{}", n.incident_id),
            link,
            "incident",
        );
    }
    let mut sources: Vec<&str> = Vec::new();
    for alert in &n.alerts {
        if sources.len() < 3 && !sources.contains(&alert.generator_url.as_str()) {
            sources.push(&alert.generator_url);
            let id = format!("source-{}", sources.len());
            push_button(
                &mut out,
                &format!("Source: {}", alert.name),
                &alert.generator_url,
                &id,
            );
        }
    }
    if let Some(am) = n.alerts.iter().find_map(|a| a.alertmanager_url.as_deref()) {
        push_button(&mut out, "Alertmanager", am, "alertmanager");
    }
    out.truncate(MAX_ACTION_ELEMENTS);
    out
}

fn push_button(out: &mut Vec<Value>, text: &str, url: &str, action_id: &str) {
    let Some(url) = safe_link(url).filter(|u| u.chars().count() <= MAX_URL) else {
        return;
    };
    let text = truncate(&one_line(text), MAX_BUTTON_TEXT);
    out.push(json!({
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": true},
        "url": url,
        "action_id": action_id,
    }));
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": mrkdwn(&truncate_mrkdwn(text, MAX_SECTION_TEXT))})
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

/// A URL that can sit inside `<url|text>` without breaking it.
fn linkable(url: &str) -> bool {
    safe_link(url).is_some()
        && url.chars().count() <= MAX_URL
        && !url.contains(['<', '>', '|', '&'])
}

/// Escapes the three characters mrkdwn treats as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for inside a code span: one line, no backticks, escaped.
fn code(s: &str) -> String {
    escape(&one_line(s).replace('`', "'"))
}

/// At most `max` characters of mrkdwn, never cut inside an escape (`&amp;`) or a link
/// (`<url|text>`); a cut text ends with `…`.
pub fn truncate_mrkdwn(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let kept: Vec<char> = s.chars().take(max.saturating_sub(1)).collect();
    let mut end = kept.len();
    loop {
        let part = &kept[..end];
        let open_amp = part
            .iter()
            .rposition(|&c| c == '&')
            .filter(|&i| !part[i..].contains(&';'));
        let open_link = part
            .iter()
            .rposition(|&c| c == '<')
            .filter(|&i| !part[i..].contains(&'>'));
        match open_amp.into_iter().chain(open_link).min() {
            Some(i) => end = i,
            None => break,
        }
    }
    let mut out: String = kept[..end].iter().collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use crate::core::engine::Outcome;
    use jiff::Timestamp;

    use super::*;

    #[test]
    fn truncation_never_splits_an_escape_or_a_link() {
        assert_eq!(truncate_mrkdwn("abc", 3), "abc");
        assert_eq!(truncate_mrkdwn("abcdef", 4), "abc…");
        assert_eq!(truncate_mrkdwn("ab&amp;cd", 5), "ab…");
        assert_eq!(truncate_mrkdwn("ab&amp;cd", 8), "ab&amp;…");
        assert_eq!(truncate_mrkdwn("a <http://x|y> b", 8), "a …");
        assert_eq!(truncate_mrkdwn("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn peer_text_cannot_mention_or_link() {
        let mut n = Notification::test_sample(None, Timestamp::UNIX_EPOCH);
        n.reason = "<!channel> look <http://evil|here>".into();
        let body = message(&n).to_string();
        assert!(!body.contains("<!channel>"), "{body}");
        assert!(body.contains("&lt;!channel&gt;"), "{body}");
    }

    #[test]
    fn only_http_urls_become_buttons_or_links() {
        for hostile in [
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "//evil.example/x",
        ] {
            let mut n = Notification::test_sample(None, Timestamp::UNIX_EPOCH);
            n.kind = MessageKind::Outcome;
            n.link = Some(hostile.into());
            for a in &mut n.alerts {
                a.generator_url = hostile.into();
                a.alertmanager_url = Some(hostile.into());
            }
            let body = message(&n);
            assert!(
                !body
                    .to_string()
                    .to_ascii_lowercase()
                    .contains("<javascript"),
                "{body}"
            );
            assert!(
                body["blocks"]
                    .as_array()
                    .expect("blocks")
                    .iter()
                    .all(|b| b["type"] != "actions"),
                "{hostile:?} became a button: {body}"
            );
        }
    }

    #[test]
    fn huge_input_stays_within_every_limit() {
        let mut n = Notification::test_sample(Some("https://rb.example"), Timestamp::UNIX_EPOCH);
        n.kind = MessageKind::Outcome;
        n.reason = "&".repeat(10_000);
        let alert = n.alerts[0].clone();
        n.alerts = (0..60)
            .map(|i| {
                let mut a = alert.clone();
                a.name = format!("{}{i}", "N".repeat(200));
                a.annotations
                    .insert("description".into(), "<x>".repeat(2000));
                a.generator_url = format!("https://prom.example/{}", "p".repeat(i * 100));
                a
            })
            .collect();
        if let Some(w) = &mut n.workload {
            w.name = "w".repeat(300);
        }
        n.decision_reason = Some("<".repeat(5000));
        for outcome in [Outcome::RolledBack, Outcome::Failed] {
            n.outcome = outcome;
            within_limits(&message(&n));
        }
    }

    fn within_limits(body: &Value) {
        let blocks = body["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= MAX_BLOCKS);
        let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        assert!(len(&body["text"]) <= MAX_FALLBACK_TEXT);
        for b in blocks {
            match b["type"].as_str() {
                Some("header") => assert!(len(&b["text"]["text"]) <= MAX_HEADER_TEXT),
                Some("section") => {
                    assert!(len(&b["text"]["text"]) <= MAX_SECTION_TEXT);
                    if let Some(fields) = b["fields"].as_array() {
                        assert!(fields.len() <= MAX_FIELDS);
                        assert!(fields.iter().all(|f| len(&f["text"]) <= MAX_FIELD_TEXT));
                    }
                }
                Some("actions") => {
                    for e in b["elements"].as_array().expect("elements") {
                        assert!(len(&e["text"]["text"]) <= MAX_BUTTON_TEXT);
                        assert!(len(&e["url"]) <= MAX_URL);
                    }
                }
                _ => {}
            }
        }
    }
}
