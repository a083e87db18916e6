//! `rollbackd incidents list|show|export|ack`: review from the store named in the config, and the
//! acknowledgement that releases the hold a not-recovered incident puts on its workload. Only
//! the store is opened: no Kubernetes client is needed.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, bail};

use super::{IncidentsCommand, ListFormat, ShowFormat};
use crate::config::Config;
use crate::store::{Ack, IncidentDetail, IncidentSummary, Store, short_time};

pub async fn incidents(
    config: Option<&Path>,
    command: &IncidentsCommand,
) -> anyhow::Result<String> {
    let Some(config) = config else {
        bail!("--config FILE is required: it names the incident store to read");
    };
    let config = Config::load_for_store(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(file) = config.store.url.strip_prefix("sqlite://")
        && !Path::new(file.split('?').next().unwrap_or(file)).exists()
    {
        bail!(
            "no incident store at {file} (store.url = {})",
            config.store.url
        );
    }
    let store = Store::open(&config.store.url)
        .await
        .with_context(|| format!("opening {}", crate::store::redact_url(&config.store.url)))?;
    match command {
        IncidentsCommand::List {
            since,
            namespace,
            format,
        } => {
            let filter = crate::http::api_filter(since.as_deref(), namespace.clone())
                .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
            let list = store.list_incidents(&filter).await?;
            Ok(match format {
                ListFormat::Json => serde_json::to_string_pretty(&list)?,
                ListFormat::Table => table(&list),
            })
        }
        IncidentsCommand::Export { since } => {
            let since = since_time(since, jiff::Timestamp::now())?;
            let mut out = String::new();
            for line in store.export_since(since).await? {
                out.push_str(&serde_json::to_string(&line)?);
                out.push('\n');
            }
            Ok(out)
        }
        IncidentsCommand::Show { id, format } => {
            let Some(detail) = store.incident(*id).await? else {
                bail!("no incident {id}");
            };
            Ok(match format {
                ShowFormat::Json => serde_json::to_string_pretty(&detail)?,
                ShowFormat::Text => render_text(&detail),
                ShowFormat::Md => markdown(&detail),
            })
        }
        IncidentsCommand::Ack { id, by, note } => {
            let by = by
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| "an operator".into());
            match store
                .ack(*id, &by, note.as_deref(), jiff::Timestamp::now())
                .await?
            {
                Ack::Released { workload } => Ok(format!(
                    "incident {id} acknowledged by {by}; rollbackd may act automatically on {workload} again\n"
                )),
                Ack::UnknownIncident => bail!("no incident {id}"),
                Ack::NotHeld { outcome } => bail!(
                    "incident {id} is not held (outcome {outcome}): only a not-recovered incident that was not acknowledged yet holds its workload"
                ),
            }
        }
        IncidentsCommand::Backup { to } => {
            let copy = store
                .backup_to(to)
                .await
                .with_context(|| format!("backing up {} to {}", config.store.url, to.display()))?;
            Ok(format!(
                "backed up {} to {}: {} incidents, {} timeline entries, integrity ok\n",
                config.store.url,
                to.display(),
                copy.incidents,
                copy.timeline_entries
            ))
        }
    }
}

/// An RFC 3339 time, or a duration back from `now`.
pub fn since_time(text: &str, now: jiff::Timestamp) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration (24h)"
        )
    })?;
    let d = jiff::SignedDuration::try_from(d)?;
    Ok(now.checked_sub(d)?)
}

fn table(list: &[IncidentSummary]) -> String {
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                short_time(&i.updated_at),
                i.workload(),
                i.rollout_name.clone().unwrap_or_else(|| "-".into()),
                i.outcome.clone(),
                i.alert_count.to_string(),
                i.status.clone(),
            ]
        })
        .collect();
    let header = [
        "ID", "UPDATED", "WORKLOAD", "ROLLOUT", "OUTCOME", "ALERTS", "STATUS",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header);
    for row in &rows {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out
}

/// An incident and its timeline as plain text (also printed by the demo).
pub fn render_text(d: &IncidentDetail) -> String {
    let s = &d.summary;
    let mut out = String::new();
    let _ = writeln!(out, "Incident {}: {} ({})", s.id, s.workload(), s.status);
    let _ = writeln!(out, "Outcome:  {}", s.outcome);
    let _ = writeln!(out, "Reason:   {}", s.reason);
    if let Some(r) = s.rollout_text() {
        let _ = writeln!(out, "Rollout:  {r}");
    }
    let _ = writeln!(out, "Opened:   {}", short_time(&s.opened_at));
    let _ = writeln!(out, "\nAlerts:");
    for a in &d.alerts {
        let _ = writeln!(
            out,
            "  {} [{}] started {} · {} deliveries · {} · {}",
            a.alertname,
            a.status,
            short_time(&a.starts_at),
            a.deliveries,
            a.outcome.as_deref().unwrap_or("-"),
            a.labels
        );
    }
    let _ = writeln!(out, "\nTimeline:");
    for e in &d.timeline {
        let outcome = e
            .outcome
            .as_deref()
            .map(|o| format!(" [{o}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:<10}{outcome} {}",
            short_time(&e.at),
            e.kind,
            e.message
        );
    }
    out
}

/// A post-incident review draft: facts filled in, judgement left to the humans.
fn markdown(d: &IncidentDetail) -> String {
    let s = &d.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Incident {}: {} — {}\n",
        s.id,
        s.workload(),
        s.outcome
    );
    let _ = writeln!(
        out,
        "_Draft generated by rollbackd; edit before sharing._\n"
    );
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "- **Outcome:** `{}`", s.outcome);
    let _ = writeln!(out, "- **Why:** {}", s.reason);
    if let Some(r) = s.rollout_text() {
        let _ = writeln!(out, "- **Rollout blamed:** {r}");
    }
    let _ = writeln!(out, "- **Status:** {}\n", s.status);
    let _ = writeln!(out, "## Alerts\n");
    for a in &d.alerts {
        let _ = writeln!(
            out,
            "- `{}` ({}), started {}, {} deliveries, outcome `{}`",
            a.alertname,
            a.status,
            short_time(&a.starts_at),
            a.deliveries,
            a.outcome.as_deref().unwrap_or("-")
        );
    }
    if !d.actions.is_empty() {
        let _ = writeln!(out, "\n## Actions\n");
    }
    for a in &d.actions {
        let _ = writeln!(
            out,
            "- {} → {} at {}: `{}`{}; mode {}; acted as {} ({}), config sha256:{}",
            a.kind,
            a.target_name.as_deref().unwrap_or("-"),
            short_time(&a.intended_at),
            a.status,
            a.verify_result
                .as_deref()
                .map(|v| format!(", verified `{v}`"))
                .unwrap_or_default(),
            if a.dry_run { "dry-run" } else { "enforce" },
            a.actor.as_deref().unwrap_or("(not recorded)"),
            a.version.as_deref().unwrap_or("?"),
            a.config_hash.as_deref().unwrap_or("?"),
        );
    }
    let _ = writeln!(
        out,
        "\n## Timeline (UTC)\n\n| time | step | outcome | what |\n|---|---|---|---|"
    );
    for e in &d.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            short_time(&e.at),
            e.kind,
            e.outcome.as_deref().unwrap_or(""),
            e.message.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        out,
        "\n## Follow-ups\n\n- [ ] Why did the rollout cause these alerts?\n- [ ] Would a canary or a pre-release check have caught it?\n- [ ] Was rollbackd's decision right? If not, what should the policy say?"
    );
    out
}
