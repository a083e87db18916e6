//! Reading rule files as a YAML tree with positions: the helpers the rule loader walks with.
//!
//! Data model: saphyr's [`MarkedYaml`] nodes, loaded without scalar resolution so scalars keep
//! their text as written; [`Cx`] collects [`RuleError`]s tagged with the file, group and rule
//! being read; [`Fields`] is one mapping split into known fields and unknown ones (reported
//! once the group or rule name is known).

use std::path::Path;
use std::time::Duration;

use saphyr::{MarkedYaml, ScalarStyle, YamlData};

use super::duration;
use super::rules::{RuleError, RuleErrorKind, RuleRef, is_valid_label_name};
use crate::core::alert::LabelSet;

/// The error sink, with the group and rule being read.
pub(super) struct Cx<'e> {
    pub(super) file: &'e Path,
    pub(super) group: Option<String>,
    pub(super) rule: Option<RuleRef>,
    pub(super) errors: &'e mut Vec<RuleError>,
}

impl Cx<'_> {
    pub(super) fn push_at(&mut self, position: Option<(usize, usize)>, kind: RuleErrorKind) {
        self.errors.push(RuleError {
            file: self.file.to_path_buf(),
            position,
            group: self.group.clone(),
            rule: self.rule.clone(),
            kind,
        });
    }

    pub(super) fn wrong_type(
        &mut self,
        node: &MarkedYaml<'_>,
        field: &str,
        expected: &'static str,
    ) {
        let field = field.to_string();
        self.push_at(
            Some(pos(node)),
            RuleErrorKind::WrongType { field, expected },
        );
    }

    /// A mapping with only `allowed` keys (others are reported); `None` if not a mapping.
    pub(super) fn mapping<'a>(
        &mut self,
        node: &'a MarkedYaml<'a>,
        what: &str,
        allowed: &[&str],
        in_what: &'static str,
    ) -> Option<Fields<'a>> {
        let YamlData::Mapping(map) = &untag(node).data else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut fields = Fields {
            entries: Vec::new(),
            unknown: Vec::new(),
            in_what,
        };
        for (k, v) in map {
            match scalar(k) {
                Some(Some(key)) if allowed.contains(&key) => fields.entries.push((key, v)),
                Some(Some(key)) => fields.unknown.push((key, pos(k))),
                _ => self.wrong_type(k, "(key)", "a string"),
            }
        }
        Some(fields)
    }

    pub(super) fn sequence<'a>(
        &mut self,
        node: &'a MarkedYaml<'a>,
        field: &str,
    ) -> Option<&'a [MarkedYaml<'a>]> {
        match &untag(node).data {
            YamlData::Sequence(items) => Some(items),
            _ if scalar(node) == Some(None) => Some(&[]),
            _ => {
                self.wrong_type(node, field, "a list");
                None
            }
        }
    }
}

/// The known fields of one mapping, and the unknown ones to report once the group or rule
/// name is known.
pub(super) struct Fields<'a> {
    entries: Vec<(&'a str, &'a MarkedYaml<'a>)>,
    unknown: Vec<(&'a str, (usize, usize))>,
    in_what: &'static str,
}

impl<'a> Fields<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a MarkedYaml<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub(super) fn report_unknown(&self, cx: &mut Cx<'_>) {
        for (key, at) in &self.unknown {
            let kind = RuleErrorKind::UnknownField(key.to_string(), self.in_what);
            cx.push_at(Some(*at), kind);
        }
    }

    /// A string field; null and absent are `None`.
    pub(super) fn string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        let node = self.get(key)?;
        match scalar(node) {
            Some(value) => value.map(str::to_string),
            None => {
                cx.wrong_type(node, key, "a string");
                None
            }
        }
    }

    pub(super) fn duration(&self, cx: &mut Cx<'_>, key: &'static str) -> Option<Duration> {
        let node = self.get(key)?;
        let text = match scalar(node) {
            Some(Some(text)) => text,
            Some(None) => return None,
            None => {
                cx.wrong_type(node, key, "a duration string");
                return None;
            }
        };
        match duration::parse(text) {
            Ok(d) => Some(d),
            Err(source) => {
                cx.push_at(
                    Some(pos(node)),
                    RuleErrorKind::BadDuration { field: key, source },
                );
                None
            }
        }
    }

    /// A map of names to strings; names are checked with `invalid` as the error.
    pub(super) fn labels(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
        invalid: fn(String) -> RuleErrorKind,
    ) -> LabelSet {
        let mut out = LabelSet::new();
        let Some(node) = self.get(key) else {
            return out;
        };
        let YamlData::Mapping(map) = &untag(node).data else {
            if scalar(node) != Some(None) {
                cx.wrong_type(node, key, "a mapping of names to strings");
            }
            return out;
        };
        for (k, v) in map {
            let (Some(Some(name)), Some(value)) = (scalar(k), scalar(v)) else {
                cx.wrong_type(v, key, "a mapping of names to strings");
                continue;
            };
            let bad_name = !is_valid_label_name(name) || (key == "labels" && name == "__name__");
            if bad_name {
                cx.push_at(Some(pos(k)), invalid(name.to_string()));
            }
            out.insert(name.to_string(), value.unwrap_or_default().to_string());
        }
        out
    }
}

/// 1-based line and column of a node.
pub(super) fn pos(node: &MarkedYaml<'_>) -> (usize, usize) {
    (node.span.start.line(), node.span.start.col() + 1)
}

pub(super) fn untag<'a>(node: &'a MarkedYaml<'a>) -> &'a MarkedYaml<'a> {
    match &node.data {
        YamlData::Tagged(_, inner) => untag(inner),
        _ => node,
    }
}

/// `Some(Some(text))` for a scalar as written, `Some(None)` for null, `None` for a collection.
pub(super) fn scalar<'a>(node: &'a MarkedYaml<'a>) -> Option<Option<&'a str>> {
    match &untag(node).data {
        YamlData::Representation(text, style, tag) => {
            let plain_null = *style == ScalarStyle::Plain
                && tag.is_none()
                && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
            Some((!plain_null).then_some(text.as_ref()))
        }
        YamlData::Value(saphyr::Scalar::String(text)) => Some(Some(text.as_ref())),
        YamlData::Value(saphyr::Scalar::Null) => Some(None),
        _ => None,
    }
}
