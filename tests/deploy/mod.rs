//! Helpers for the tests of `deploy/`: render a kustomization with the real kubectl, and read
//! YAML into `serde_json::Value`s so that the checks read like JSON pointers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A linter that `scripts/test` installs into `target/tools` (kubernetes-validate, hadolint).
pub fn tool(name: &str) -> PathBuf {
    let path = repo().join("target/tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: ./scripts/test installs it (see the tools step there)",
        path.display()
    );
    path
}

/// A copy of `deploy/kubernetes` with the token files (and the HA layout's store URL) the
/// README tells a user to create.
pub fn deploy_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&repo().join("deploy/kubernetes"), dir.path());
    std::fs::write(dir.path().join("base/webhook-token"), "full-token\n").expect("token");
    std::fs::write(dir.path().join("base/read-token"), "read-token\n").expect("token");
    std::fs::write(
        dir.path().join("overlays/ha/store-url"),
        "postgres://rollbackd:secret@postgres.db.svc:5432/rollbackd\n",
    )
    .expect("store url");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// `kubectl kustomize DIR`, required to succeed.
pub fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The kinds of `deploy/` the sandbox serves (it has no RBAC, PVC, NetworkPolicy or budget).
pub const SANDBOX_KINDS: &[&str] = &["Namespace", "ConfigMap", "Secret", "Service", "Deployment"];

/// The documents of a rendered stream whose kind the sandbox serves, as YAML text.
pub fn served_by_sandbox(rendered: &str) -> Vec<&str> {
    rendered
        .split("\n---\n")
        .filter(|doc| {
            parse_yaml(doc)[0]["kind"]
                .as_str()
                .is_some_and(|kind| SANDBOX_KINDS.contains(&kind))
        })
        .collect()
}

/// Every document of a YAML stream.
pub fn parse_yaml(text: &str) -> Vec<Value> {
    Yaml::load_from_str(text)
        .expect("valid YAML")
        .iter()
        .map(to_json)
        .filter(|v| !v.is_null())
        .collect()
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Value(s) => match s {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::from(*i),
            Scalar::FloatingPoint(f) => Value::from(f.into_inner()),
            Scalar::String(s) => Value::String(s.to_string()),
        },
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
        Yaml::Tagged(_, inner) => to_json(inner),
        Yaml::Representation(text, _, _) => Value::String(text.to_string()),
        Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// The one object of this kind and name.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn all<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}
