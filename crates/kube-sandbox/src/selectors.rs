//! Label and field selectors, as list and watch accept them in the query string.
//!
//! A [`LabelSelector`] is a conjunction of requirements parsed from the Kubernetes text
//! syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`); a [`FieldSelector`] is a conjunction of
//! `path=value` / `path!=value` terms over the labels a resource row allows.
//! [`selector_from_object`] turns a `metav1.LabelSelector` object (matchLabels,
//! matchExpressions) into the same requirement list, for controllers and `/scale`.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
}

#[derive(Debug, Clone)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    pub reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_term(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{term}', expected: valid label selector"
                ))
            })?);
        }
        Ok(Self { reqs })
    }

    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| {
            let v = get(&r.key);
            match r.op {
                Op::Eq | Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotEq | Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }

    /// Does the object's `metadata.labels` match?
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(obj.pointer("/metadata/labels"))
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

/// Split on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_term(t: &str) -> Option<Requirement> {
    let req = |key: &str, op, values: Vec<String>| {
        valid_key(key.trim()).then(|| Requirement {
            key: key.trim().to_string(),
            op,
            values,
        })
    };
    if let Some(k) = t.strip_prefix('!') {
        return req(k, Op::NotExists, vec![]);
    }
    for (sym, op) in [("!=", Op::NotEq), ("==", Op::Eq), ("=", Op::Eq)] {
        if let Some((k, v)) = t.split_once(sym) {
            return req(k, op, vec![v.trim().to_string()]);
        }
    }
    let words: Vec<&str> = t.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim();
        let (op, rest) = if let Some(r) = rest.strip_prefix("notin") {
            (Op::NotIn, r)
        } else if let Some(r) = rest.strip_prefix("in") {
            (Op::In, r)
        } else {
            return None;
        };
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        let values = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return req(words[0], op, values);
    }
    req(t, Op::Exists, vec![])
}

/// A `metav1.LabelSelector` object as requirements. None if it is malformed.
pub fn selector_from_object(sel: &Value) -> Option<LabelSelector> {
    let mut reqs = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::Eq,
                values: vec![v.as_str()?.to_string()],
            });
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key")?.as_str()?.to_string();
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let op = match e.get("operator")?.as_str()? {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::NotExists,
                _ => return None,
            };
            reqs.push(Requirement { key, op, values });
        }
    }
    Some(LabelSelector { reqs })
}

/// `metav1.FormatLabelSelector`: the text form of a selector object.
pub fn format_selector_object(sel: &Value) -> String {
    let Some(s) = selector_from_object(sel) else {
        return String::new();
    };
    let parts: Vec<String> = s
        .reqs
        .iter()
        .map(|r| match r.op {
            Op::Eq => format!("{}={}", r.key, r.values.join("")),
            Op::NotEq => format!("{}!={}", r.key, r.values.join("")),
            Op::In => format!("{} in ({})", r.key, r.values.join(",")),
            Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
            Op::Exists => r.key.clone(),
            Op::NotExists => format!("!{}", r.key),
        })
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    /// (dotted path, wanted value, equal?)
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Parse, refusing labels the resource does not support, like the real server does.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v, eq) = if let Some((k, v)) = t.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" && !allowed.contains(&k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            terms.push((k.to_string(), v.trim().to_string(), eq));
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, want, eq)| {
            let got = dotted(obj, path).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            (got.as_deref().unwrap_or("") == want) == *eq
        })
    }
}

/// The value at a dotted path (`spec.template.spec`), if any.
pub fn dotted<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, k| v.get(k))
}
