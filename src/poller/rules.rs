//! Loading Prometheus rule files into typed alerting rules for the poller.
//!
//! Data model: a file holds `groups:`, each a [`RuleGroup`] with a name, an optional evaluation
//! `interval` and its [`AlertingRule`]s (`alert`, `expr`, `for`, `keep_firing_for`, `labels`,
//! `annotations`, and the post-rollout form read from `rollbackd_post_rollout_*` annotations).
//! Group `labels` are merged into every rule's labels (the rule wins), as
//! Prometheus 3 does. Recording rules (`record:`) are checked but skipped, with a note in
//! [`LoadedRules::notes`]. `limit` and `query_offset` are accepted; the poller honours
//! `query_offset` and does not enforce `limit`.
//!
//! Checks follow Prometheus's `rulefmt` (what `promtool check rules` reports), except that PromQL
//! itself is not parsed here: an empty `expr` is an error, a wrong one shows up as an
//! inconclusive evaluation. Every error names the file, line and column, group and rule, and
//! [`load_rule_files`] returns all of them at once ([`RuleErrors`]). The YAML is read as a tree
//! with positions (saphyr) so that unknown fields are reported instead of stopping the load.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use saphyr::{MarkedYaml, YamlLoader};

use super::yaml::{Cx, pos, scalar};

use super::duration::DurationError;
use super::post_rollout::PostRollout;
use crate::core::alert::LabelSet;

/// A group of alerting rules from one rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    /// The file the group came from, as matched by the glob.
    pub file: PathBuf,
    /// The group's own `interval`; `None` means the poller's interval.
    pub interval: Option<Duration>,
    /// `query_offset`: evaluate at `now - query_offset`.
    pub query_offset: Option<Duration>,
    pub rules: Vec<AlertingRule>,
}

/// One `alert:` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertingRule {
    pub alert: String,
    pub expr: String,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    /// Rule labels (group labels merged in); values may hold templates.
    pub labels: LabelSet,
    /// Annotation templates, expanded per alert (without the `rollbackd_post_rollout_*` ones).
    pub annotations: LabelSet,
    /// The post-rollout form, when the rule opts in with `rollbackd_post_rollout_*`
    /// annotations (see [`super::post_rollout`]).
    pub post_rollout: Option<PostRollout>,
}

/// What a successful load produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedRules {
    pub groups: Vec<RuleGroup>,
    /// Things skipped on purpose (recording rules, ignored fields), one sentence each.
    pub notes: Vec<String>,
}

/// Which rule an error is about: its 1-based position in the group and its name, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub name: String,
}

/// One problem in one rule file, with where it is.
#[derive(Debug, thiserror::Error)]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    pub group: Option<String>,
    pub rule: Option<RuleRef>,
    #[source]
    pub kind: RuleErrorKind,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(group) = &self.group {
            write!(f, "group {group:?}, ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule {} {:?}, ", rule.index, rule.name)?;
        }
        write!(f, "{}", self.kind)
    }
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RuleErrorKind {
    #[error("invalid glob pattern {pattern:?}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error("pattern {0:?} matches no file")]
    NoMatch(String),
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
    #[error("invalid YAML: {}", .0.info())]
    Yaml(#[source] saphyr::ScanError),
    #[error("the file holds {0} YAML documents; a rule file has one")]
    MultipleDocuments(usize),
    #[error("field {field:?} must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field {0:?} not found in {1}")]
    UnknownField(String, &'static str),
    #[error("field {0:?} must be set")]
    Missing(&'static str),
    #[error("invalid duration in {field:?}")]
    BadDuration {
        field: &'static str,
        #[source]
        source: DurationError,
    },
    #[error("group name must not be empty")]
    EmptyGroupName,
    #[error("group name is repeated in the same file (first at line {0})")]
    DuplicateGroup(usize),
    #[error("only one of 'record' and 'alert' must be set")]
    RecordAndAlert,
    #[error("one of 'record' or 'alert' must be set")]
    NeitherRecordNorAlert,
    #[error("invalid field {0:?} in recording rule")]
    FieldInRecordingRule(&'static str),
    #[error("invalid label name: {0:?}")]
    InvalidLabelName(String),
    #[error("invalid annotation name: {0:?}")]
    InvalidAnnotationName(String),
    #[error("{what} {name:?}: unterminated template action ('{{{{' without '}}}}')")]
    UnterminatedTemplate { what: &'static str, name: String },
    #[error("post-rollout form: {0}")]
    PostRollout(String),
}

/// Every error found while loading, in file order. Display shows one per line.
#[derive(Debug, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Expands the glob patterns (`rules/*.yml`) and loads every matched file, once each, in
/// pattern order and then name order. Returns every error of every file, or the groups.
pub fn load_rule_files(patterns: &[String]) -> Result<LoadedRules, RuleErrors> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for pattern in patterns {
        let bare = |kind| RuleError {
            file: PathBuf::from(pattern),
            position: None,
            group: None,
            rule: None,
            kind,
        };
        let paths = match glob::glob(pattern) {
            Ok(paths) => paths,
            Err(source) => {
                let pattern = pattern.clone();
                errors.push(bare(RuleErrorKind::Pattern { pattern, source }));
                continue;
            }
        };
        let before = files.len();
        for entry in paths {
            match entry {
                Ok(path) if seen.insert(path.clone()) => files.push(path),
                Ok(_) => {}
                Err(e) => errors.push(RuleError {
                    file: e.path().to_path_buf(),
                    ..bare(RuleErrorKind::Io(std::io::Error::from(e)))
                }),
            }
        }
        if files.len() == before && !pattern_matched_a_seen_file(pattern, &seen) {
            errors.push(bare(RuleErrorKind::NoMatch(pattern.clone())));
        }
    }
    let mut loaded = LoadedRules::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_rule_file(&file, &text, &mut loaded, &mut errors),
            Err(e) => errors.push(RuleError {
                file,
                position: None,
                group: None,
                rule: None,
                kind: RuleErrorKind::Io(e),
            }),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(RuleErrors(errors))
    }
}

fn pattern_matched_a_seen_file(pattern: &str, seen: &BTreeSet<PathBuf>) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| seen.iter().any(|f| p.matches_path(f)))
}

/// Parses one rule file's text, appending its groups and notes to `out` and its problems to
/// `errors`. `file` is only used in messages and in [`RuleGroup::file`].
pub fn parse_rule_file(
    file: &Path,
    text: &str,
    out: &mut LoadedRules,
    errors: &mut Vec<RuleError>,
) {
    let first = errors.len();
    parse_into(file, text, out, errors);
    errors[first..].sort_by_key(|e| e.position); // stable: same place keeps check order
}

fn parse_into(file: &Path, text: &str, out: &mut LoadedRules, errors: &mut Vec<RuleError>) {
    let mut cx = Cx {
        file,
        group: None,
        rule: None,
        errors,
    };
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false); // keep scalars as written: label `1.10` stays "1.10"
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let loaded = parser.load(&mut loader, true);
    let error = loaded.err().or_else(|| loader.error().cloned());
    if let Some(e) = error {
        let at = (e.marker().line(), e.marker().col() + 1);
        cx.push_at(Some(at), RuleErrorKind::Yaml(e));
        return;
    }
    let docs = loader.into_documents();
    if docs.len() > 1 {
        cx.push_at(
            Some(pos(&docs[1])),
            RuleErrorKind::MultipleDocuments(docs.len()),
        );
        return;
    }
    let Some(doc) = docs.first() else {
        return; // an empty file has no groups, as in Prometheus
    };
    if scalar(doc) == Some(None) {
        return;
    }
    let Some(top) = cx.mapping(doc, "the file", &["groups"], "the top level") else {
        return;
    };
    top.report_unknown(&mut cx);
    let Some(groups) = top.get("groups").and_then(|n| cx.sequence(n, "groups")) else {
        return;
    };
    let mut names: Vec<(String, usize)> = Vec::new();
    for node in groups {
        if let Some(group) = parse_group(&mut cx, node, &mut names, &mut out.notes) {
            out.groups.push(group);
        }
        cx.group = None;
    }
}

const GROUP_FIELDS: &[&str] = &[
    "name",
    "interval",
    "query_offset",
    "limit",
    "rules",
    "labels",
];
const RULE_FIELDS: &[&str] = &[
    "record",
    "alert",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

fn parse_group<'a>(
    cx: &mut Cx<'_>,
    node: &'a MarkedYaml<'a>,
    names: &mut Vec<(String, usize)>,
    notes: &mut Vec<String>,
) -> Option<RuleGroup> {
    let fields = cx.mapping(node, "a group", GROUP_FIELDS, "rule group")?;
    let name = fields.string(cx, "name").unwrap_or_default();
    cx.group = Some(name.clone());
    fields.report_unknown(cx);
    let at = pos(node);
    if name.is_empty() {
        cx.push_at(Some(at), RuleErrorKind::EmptyGroupName);
    } else if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
        cx.push_at(Some(at), RuleErrorKind::DuplicateGroup(*first));
    } else {
        names.push((name.clone(), at.0));
    }
    let interval = fields.duration(cx, "interval");
    let query_offset = fields.duration(cx, "query_offset");
    if let Some(limit) = fields.get("limit") {
        match scalar(limit) {
            Some(Some(s)) if s.parse::<u64>().is_ok() => notes.push(format!(
                "{}: group {name:?}: `limit` is not enforced by rollbackd's poller",
                cx.file.display()
            )),
            Some(None) => {}
            _ => cx.wrong_type(limit, "limit", "a non-negative integer"),
        }
    }
    let group_labels = fields.labels(cx, "labels", RuleErrorKind::InvalidLabelName);
    let mut rules = Vec::new();
    let rule_nodes = fields.get("rules").and_then(|n| cx.sequence(n, "rules"));
    for (i, rule_node) in rule_nodes.unwrap_or_default().iter().enumerate() {
        cx.rule = Some(RuleRef {
            index: i + 1,
            name: String::new(),
        });
        if let Some(mut rule) = parse_rule(cx, rule_node, &name, notes) {
            for (k, v) in &group_labels {
                rule.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            rules.push(rule);
        }
        cx.rule = None;
    }
    Some(RuleGroup {
        name,
        file: cx.file.to_path_buf(),
        interval: interval.filter(|d| !d.is_zero()),
        query_offset,
        rules,
    })
}

fn parse_rule<'a>(
    cx: &mut Cx<'_>,
    node: &'a MarkedYaml<'a>,
    group: &str,
    notes: &mut Vec<String>,
) -> Option<AlertingRule> {
    let fields = cx.mapping(node, "a rule", RULE_FIELDS, "rule")?;
    let record = fields.string(cx, "record").unwrap_or_default();
    let alert = fields.string(cx, "alert").unwrap_or_default();
    if let Some(rule) = &mut cx.rule {
        rule.name = if alert.is_empty() { &record } else { &alert }.clone();
    }
    fields.report_unknown(cx);
    let at = Some(pos(node));
    match (record.is_empty(), alert.is_empty()) {
        (false, false) => cx.push_at(at, RuleErrorKind::RecordAndAlert),
        (true, true) => cx.push_at(at, RuleErrorKind::NeitherRecordNorAlert),
        _ => {}
    }
    let expr = fields.string(cx, "expr").unwrap_or_default();
    if expr.trim().is_empty() {
        cx.push_at(at, RuleErrorKind::Missing("expr"));
    }
    let for_ = fields.duration(cx, "for");
    let keep_firing_for = fields.duration(cx, "keep_firing_for");
    let labels = fields.labels(cx, "labels", RuleErrorKind::InvalidLabelName);
    let mut annotations = fields.labels(cx, "annotations", RuleErrorKind::InvalidAnnotationName);
    if !record.is_empty() && alert.is_empty() {
        for (field, set) in [
            ("annotations", !annotations.is_empty()),
            ("for", for_.is_some_and(|d| !d.is_zero())),
            (
                "keep_firing_for",
                keep_firing_for.is_some_and(|d| !d.is_zero()),
            ),
        ] {
            if set {
                cx.push_at(at, RuleErrorKind::FieldInRecordingRule(field));
            }
        }
        notes.push(format!(
            "{}: group {group:?}: recording rule {record:?} skipped (rollbackd evaluates alerting rules only)",
            cx.file.display()
        ));
        return None;
    }
    let post_rollout = PostRollout::take(&mut annotations).unwrap_or_else(|problems| {
        for problem in problems {
            cx.push_at(at, RuleErrorKind::PostRollout(problem));
        }
        None
    });
    for (what, map) in [("label", &labels), ("annotation", &annotations)] {
        for (name, text) in map.iter() {
            if super::template::has_unterminated_action(text) {
                let name = name.clone();
                cx.push_at(at, RuleErrorKind::UnterminatedTemplate { what, name });
            }
        }
    }
    Some(AlertingRule {
        alert,
        expr,
        for_: for_.unwrap_or_default(),
        keep_firing_for: keep_firing_for.unwrap_or_default(),
        labels,
        annotations,
        post_rollout,
    })
}

/// Whether `name` is a label name in Prometheus's classic (and portable) syntax.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Loads rules from YAML text alone (tests and `rollbackd check` of a snippet).
pub fn parse_rules_str(file: &Path, text: &str) -> Result<LoadedRules, RuleErrors> {
    let mut loaded = LoadedRules::default();
    let mut errors = Vec::new();
    parse_rule_file(file, text, &mut loaded, &mut errors);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(RuleErrors(errors))
    }
}
