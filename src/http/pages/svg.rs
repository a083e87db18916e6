//! The incident graph as inline SVG, drawn on the server: the rule's value over time, the
//! threshold as a dashed line, and the rollout, the alert, the action and the recovery as
//! vertical marks. No script, no external resource; every text is escaped.

use std::fmt::Write;

use jiff::Timestamp;

use super::escape;
use super::time::offset;
use crate::store::IncidentGraph;

/// A moment marked on the time axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// `rollout`, `alert`, `action` or `recovery`: the CSS class and `data-mark`.
    pub kind: &'static str,
    pub at: Timestamp,
    pub label: String,
}

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 34.0;

/// The whole `<svg>` element.
pub fn render(g: &IncidentGraph, marks: &[Mark], origin: Option<Timestamp>) -> String {
    let secs = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    let mut t0 = secs(g.start_at);
    let mut t1 = secs(g.end_at);
    for m in marks {
        t0 = t0.min(secs(m.at));
        t1 = t1.max(secs(m.at));
    }
    if t1 <= t0 {
        t1 = t0 + 1.0;
    }
    let values = g.samples.iter().map(|(_, v)| *v);
    let mut lo = values.clone().fold(f64::INFINITY, f64::min).min(0.0);
    let mut hi = values.fold(f64::NEG_INFINITY, f64::max);
    if let Some(th) = g.threshold {
        lo = lo.min(th);
        hi = hi.max(th);
    }
    if !hi.is_finite() {
        hi = 1.0;
    }
    if !lo.is_finite() {
        lo = 0.0;
    }
    hi += (hi - lo).abs() * 0.1;
    if hi <= lo {
        hi = lo + 1.0;
    }
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"graph-title\"><title id=\"graph-title\">{}</title>",
        escape(&format!("{} over the incident", g.expr))
    );
    // Axes and value ticks.
    let _ = write!(
        s,
        "<g class=\"axis\"><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/><line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>",
        b = H - BOTTOM,
        r = W - RIGHT
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y(v) + 4.0,
            escape(&number(v))
        );
    }
    for (t, anchor) in [(t0, "start"), (t1, "end")] {
        let at = Timestamp::from_millisecond((t * 1000.0) as i64).unwrap_or(g.start_at);
        let label = offset(&at.to_string(), origin);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            H - BOTTOM + 16.0,
            escape(&label)
        );
    }
    s.push_str("</g>");
    // The threshold.
    if let Some(th) = g.threshold {
        let label = format!(
            "threshold {} {}",
            g.comparison.as_deref().unwrap_or(""),
            number(th)
        );
        let _ = write!(
            s,
            "<g class=\"threshold\" data-threshold=\"{th}\"><line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\"/><text x=\"{r}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text></g>",
            escape(&label),
            yy = y(th),
            ty = y(th) - 4.0,
            r = W - RIGHT
        );
    }
    // The series, broken where samples are missing.
    let gap = (g.step_seconds * 2.5).max(1.0);
    let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<f64> = None;
    for &(t, v) in &g.samples {
        if last.is_none_or(|l| t - l > gap) {
            segments.push(Vec::new());
        }
        if let Some(seg) = segments.last_mut() {
            seg.push((t, v));
        }
        last = Some(t);
    }
    s.push_str("<g class=\"series\">");
    for seg in &segments {
        let points: Vec<String> = seg
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(s, "<polyline points=\"{}\"/>", points.join(" "));
    }
    s.push_str("</g>");
    // The marks, labels staggered so that close ones stay readable.
    for (i, m) in marks.iter().enumerate() {
        let mx = x(secs(m.at));
        let ly = 12.0 + (i % 3) as f64 * 12.0;
        let anchor = if mx > W - 120.0 { "end" } else { "start" };
        let _ = write!(
            s,
            "<g class=\"mark mark-{k}\" data-mark=\"{k}\"><title>{t}</title><line x1=\"{mx:.1}\" y1=\"{TOP}\" x2=\"{mx:.1}\" y2=\"{b}\"/><text x=\"{tx:.1}\" y=\"{ly}\" text-anchor=\"{anchor}\">{l}</text></g>",
            k = m.kind,
            t = escape(&format!(
                "{} at {}",
                m.label,
                super::time::utc(&m.at.to_string())
            )),
            b = H - BOTTOM,
            tx = if anchor == "end" { mx - 3.0 } else { mx + 3.0 },
            l = escape(&m.label),
        );
    }
    s.push_str("</svg>");
    s
}

/// A value in three significant digits: "0.3", "0.05", "1.2k", "2.5e-05".
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 1e3 {
        let text = format!("{:.2}", v / 1e3);
        format!("{}k", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let digits = (2 - a.log10().floor() as i32).max(0) as usize;
        let text = format!("{v:.digits$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn graph() -> IncidentGraph {
        IncidentGraph {
            alertname: "HighErrorRate".into(),
            expr: "sum(rate(x[1m])) / sum(rate(y[1m]))".into(),
            comparison: Some(">".into()),
            threshold: Some(0.05),
            series: json!({"app": "web"}),
            step_seconds: 1.0,
            start_at: ts("2026-12-01T00:00:00Z"),
            end_at: ts("2026-12-01T00:01:00Z"),
            samples: (0..60)
                .filter(|i| !(20..25).contains(i))
                .map(|i| {
                    let t = ts("2026-12-01T00:00:00Z").as_second() as f64 + f64::from(i);
                    (t, if (30..45).contains(&i) { 0.3 } else { 0.0 })
                })
                .collect(),
            fetched_at: ts("2026-12-01T00:01:00Z"),
        }
    }

    #[test]
    fn the_graph_has_its_marks_threshold_and_gaps() {
        let marks = [
            ("rollout", "2026-12-01T00:00:28Z", "rollout <b>"),
            ("alert", "2026-12-01T00:00:35Z", "alert"),
            ("action", "2026-12-01T00:00:36Z", "action"),
            ("recovery", "2026-12-01T00:00:50Z", "recovery"),
        ]
        .map(|(kind, at, label)| Mark {
            kind,
            at: ts(at),
            label: label.into(),
        });
        let svg = render(&graph(), &marks, Some(ts("2026-12-01T00:00:28Z")));
        for kind in ["rollout", "alert", "action", "recovery"] {
            assert!(
                svg.contains(&format!("data-mark=\"{kind}\"")),
                "{kind}: {svg}"
            );
        }
        assert!(svg.contains("data-threshold=\"0.05\""), "{svg}");
        assert!(svg.contains("threshold &gt; 0.05"), "{svg}");
        assert!(svg.contains("rollout &lt;b&gt;"), "escaped: {svg}");
        assert!(!svg.contains("<b>"));
        assert_eq!(svg.matches("<polyline").count(), 2, "a gap splits the line");
        assert!(svg.contains(">T−28 s<"), "{svg}");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(0.3), "0.3");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1500.0), "1.5k");
    }
}
