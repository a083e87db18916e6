//! Server-side printing: `meta.k8s.io/v1` Table responses for clients that ask with
//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1` (kubectl get does).
//!
//! Columns are NAME, the row's declared [`Column`]s, then AGE (as `kubectl` words durations).
//! Each row carries the object as `includeObject` asks: `None`, `Metadata` (the default, a
//! PartialObjectMetadata) or `Object`.

use serde_json::{Value, json};

use super::resources::{Cell, ResourceDef};
use super::selectors::{dotted, format_selector_object};

/// Does the Accept header ask for a Table?
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    let Some(ts) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    else {
        return "<unknown>".into();
    };
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn cell(obj: &Value, c: &Cell, ty: &str) -> Value {
    match c {
        Cell::Path(p) => match dotted(obj, p) {
            Some(Value::String(s)) => json!(s),
            Some(Value::Number(n)) => json!(n),
            Some(Value::Null) | None if ty == "integer" => json!(0),
            Some(Value::Null) | None => json!("<none>"),
            Some(other) => json!(other.to_string()),
        },
        Cell::Ratio(a, b) => {
            let n = |p: &str| dotted(obj, p).and_then(Value::as_i64).unwrap_or(0);
            json!(format!("{}/{}", n(a), n(b)))
        }
        Cell::Each(list, field) => {
            let names: Vec<&str> = dotted(obj, list)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.get(*field).and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            json!(names.join(","))
        }
        Cell::Selector(p) => json!(
            dotted(obj, p)
                .map(format_selector_object)
                .unwrap_or_else(|| "<none>".into())
        ),
    }
}

fn row(def: &ResourceDef, obj: &Value, include: &str) -> Value {
    let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
    cells.extend(def.columns.iter().map(|c| cell(obj, &c.cell, c.ty)));
    cells.push(json!(age(obj)));
    let mut r = json!({"cells": cells});
    match include {
        "None" => {}
        "Object" => r["object"] = obj.clone(),
        _ => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    r
}

/// A Table of `objs`, consistent at `rv`.
pub fn table(def: &ResourceDef, objs: &[Value], rv: Option<u64>, include: &str) -> Value {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    cols.extend(def.columns.iter().map(|c| json!({"name": c.name, "type": c.ty, "format": "", "description": c.name, "priority": c.priority})));
    cols.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": cols,
        "rows": objs.iter().map(|o| row(def, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
