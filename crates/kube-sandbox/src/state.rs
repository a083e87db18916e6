//! The sandbox's state on disk (`SandboxOptions::state_dir`), so that a restarted sandbox is
//! the same cluster: same certificates and token (an old kubeconfig still works), same
//! objects, uids and creationTimestamps, and a resourceVersion counter that goes on from
//! where it stopped (never reused, as etcd's revision is never reused).
//!
//! Files in the directory:
//!
//! | file | content |
//! | --- | --- |
//! | `ca.crt`, `server.crt` | PEM certificates (the CA clients trust; the server's, signed by it) |
//! | `server.key` | PEM PKCS#8 key of the server certificate (mode 0600) |
//! | `token` | the bearer token (mode 0600) |
//! | `objects.json` | `{"format":1,"resourceVersion":"N","resources":{"apps/deployments":[...]}}` |
//! | `lock` | held (`flock`) while a sandbox uses the directory |
//!
//! Every file is written whole and atomically: a temporary file, fsync, rename over the old
//! one, fsync of the directory; so a process killed at any moment leaves the previous or the
//! new version, never a mix. `objects.json` is rewritten at the end of every store
//! transaction that committed a change (see `store.rs`), before its events reach anyone, so
//! a client can never have seen a resourceVersion the next start does not know about. Any
//! file that is there but unreadable is an error at start ([`StateError`]); nothing is
//! silently replaced by an empty cluster. A missing `objects.json` is an empty cluster (a
//! first start; the file is written before the sandbox serves anything).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::store::{Objects, meta_str, rv_of};
use super::tls::Pems;

const FORMAT: u64 = 1;
const OBJECTS: &str = "objects.json";
const TOKEN: &str = "token";
const CA_CERT: &str = "ca.crt";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const LOCK: &str = "lock";

/// Why a state directory cannot be used. The message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {dir} is in use by another sandbox (its lock file is held)")]
    InUse { dir: PathBuf },
    #[error(
        "state file {path} is unreadable: {problem}; restore it from a backup or remove the \
         state directory to start an empty cluster"
    )]
    Corrupt { path: PathBuf, problem: String },
    #[error(
        "the token given does not match the one kept in {path}; pass no token to use the \
         kept one, or remove the state directory"
    )]
    TokenMismatch { path: PathBuf },
}

/// The objects and resourceVersion counter read back from `objects.json`.
pub struct Restored {
    pub rv: u64,
    pub objects: HashMap<String, Objects>,
}

/// What a state directory gives the sandbox at start.
pub struct Opened {
    pub persister: Persister,
    pub pems: Pems,
    pub token: String,
    /// None: no objects were kept yet (an empty cluster).
    pub restored: Option<Restored>,
}

/// Writes `objects.json`; holds the directory's lock for as long as it lives.
pub struct Persister {
    dir: PathBuf,
    _lock: File,
}

/// Open (creating it if needed) and lock a state directory, and read what it keeps; make the
/// certificates and token on a first start. `token`: the one the options ask for, if any.
pub fn open(dir: &Path, token: Option<&str>) -> Result<Opened, StateError> {
    let io = |source| StateError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StateError::InUse {
                dir: dir.to_path_buf(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let pems = open_pems(dir)?;
    let token = open_token(dir, token)?;
    let restored = read_objects(&dir.join(OBJECTS))?;
    Ok(Opened {
        persister: Persister {
            dir: dir.to_path_buf(),
            _lock: lock,
        },
        pems,
        token,
        restored,
    })
}

/// The file's text, None if it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, StateError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StateError::Corrupt {
                path: path.to_path_buf(),
                problem: "not UTF-8 text".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            dir: path.to_path_buf(),
            source,
        }),
    }
}

fn open_pems(dir: &Path) -> Result<Pems, StateError> {
    let files = [CA_CERT, SERVER_CERT, SERVER_KEY];
    let texts = files
        .iter()
        .map(|f| read_text(&dir.join(f)))
        .collect::<Result<Vec<_>, _>>()?;
    match texts.as_slice() {
        [Some(ca), Some(cert), Some(key)] => {
            let pems = Pems {
                ca_cert: ca.clone(),
                server_cert: cert.clone(),
                server_key: key.clone(),
            };
            // Refuse here what the TLS layer would refuse later, naming the files.
            super::tls::identity(&pems).map_err(|problem| StateError::Corrupt {
                path: dir.join(SERVER_CERT),
                problem,
            })?;
            Ok(pems)
        }
        [None, None, None] => {
            let pems = super::tls::generate().map_err(|problem| StateError::Corrupt {
                path: dir.join(CA_CERT),
                problem: format!("cannot make a certificate: {problem}"),
            })?;
            let io = |source| StateError::Io {
                dir: dir.to_path_buf(),
                source,
            };
            // The key first: a start killed in between finds an incomplete set and says so.
            write_atomic(dir, SERVER_KEY, pems.server_key.as_bytes(), 0o600).map_err(io)?;
            write_atomic(dir, SERVER_CERT, pems.server_cert.as_bytes(), 0o644).map_err(io)?;
            write_atomic(dir, CA_CERT, pems.ca_cert.as_bytes(), 0o644).map_err(io)?;
            Ok(pems)
        }
        _ => {
            let missing = files
                .iter()
                .zip(&texts)
                .find(|(_, t)| t.is_none())
                .map_or(CA_CERT, |(f, _)| f);
            Err(StateError::Corrupt {
                path: dir.join(missing),
                problem: format!(
                    "missing while the other certificate files exist ({})",
                    files.join(", ")
                ),
            })
        }
    }
}

fn open_token(dir: &Path, wanted: Option<&str>) -> Result<String, StateError> {
    let path = dir.join(TOKEN);
    match read_text(&path)? {
        Some(kept) => {
            let kept = kept.trim().to_string();
            if kept.is_empty() {
                return Err(StateError::Corrupt {
                    path,
                    problem: "empty".into(),
                });
            }
            match wanted {
                Some(w) if w != kept => Err(StateError::TokenMismatch { path }),
                _ => Ok(kept),
            }
        }
        None => {
            let token = wanted
                .map(str::to_string)
                .unwrap_or_else(super::random_token);
            write_atomic(dir, TOKEN, format!("{token}\n").as_bytes(), 0o600).map_err(|source| {
                StateError::Io {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
            Ok(token)
        }
    }
}

/// `objects.json`, checked: every object has a name and a resourceVersion not above the
/// counter, no two share a key.
fn read_objects(path: &Path) -> Result<Option<Restored>, StateError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let corrupt = |problem: String| StateError::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    match doc.get("format").and_then(Value::as_u64) {
        Some(FORMAT) => {}
        other => {
            return Err(corrupt(format!(
                "unknown format {other:?} (expected {FORMAT})"
            )));
        }
    }
    let rv = doc
        .get("resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|rv| *rv > 0)
        .ok_or_else(|| corrupt("no resourceVersion counter".into()))?;
    let resources = doc
        .get("resources")
        .and_then(Value::as_object)
        .ok_or_else(|| corrupt("no resources".into()))?;
    let mut objects: HashMap<String, Objects> = HashMap::new();
    for (key, list) in resources {
        let list = list
            .as_array()
            .ok_or_else(|| corrupt(format!("{key}: not a list")))?;
        let stored = objects.entry(key.clone()).or_default();
        for obj in list {
            let name = meta_str(obj, "name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| corrupt(format!("{key}: an object without metadata.name")))?;
            let ns = meta_str(obj, "namespace").unwrap_or_default();
            let obj_rv = rv_of(obj);
            if obj_rv == 0 || obj_rv > rv {
                return Err(corrupt(format!(
                    "{key} {ns}/{name}: resourceVersion {obj_rv} is not within 1..={rv}"
                )));
            }
            if stored
                .insert((ns.to_string(), name.to_string()), obj.clone())
                .is_some()
            {
                return Err(corrupt(format!("{key} {ns}/{name}: stored twice")));
            }
        }
    }
    Ok(Some(Restored { rv, objects }))
}

impl Persister {
    /// Rewrite `objects.json` with every object and the counter.
    pub fn save(&mut self, rv: u64, objects: &HashMap<String, Objects>) -> std::io::Result<()> {
        let resources: BTreeMap<&str, Vec<&Value>> = objects
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, m)| (k.as_str(), m.values().collect()))
            .collect();
        let doc = json!({
            "format": FORMAT,
            "resourceVersion": rv.to_string(),
            "resources": resources,
        });
        let bytes = serde_json::to_vec(&doc)?;
        write_atomic(&self.dir, OBJECTS, &bytes, 0o644)
    }
}

/// Replace `dir/name` with `bytes` so that a crash at any point leaves the old or the new
/// content: write a temporary file, fsync it, rename it over, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects_file(dir: &Path, text: &str) {
        fs::write(dir.join(OBJECTS), text).unwrap();
    }

    #[test]
    fn first_open_makes_identity_and_token_and_second_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), None).unwrap();
        assert!(first.restored.is_none());
        let (pems, token) = (first.pems.clone(), first.token.clone());
        drop(first);
        let again = open(dir.path(), None).unwrap();
        assert_eq!(again.pems, pems);
        assert_eq!(again.token, token);
        drop(again);
        assert_eq!(open(dir.path(), Some(&token)).unwrap().token, token);
    }

    #[test]
    fn a_different_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), Some("one")).unwrap());
        let err = open(dir.path(), Some("two")).err().unwrap();
        assert!(matches!(err, StateError::TokenMismatch { .. }), "{err}");
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = open(dir.path(), None).unwrap();
        let err = open(dir.path(), None).err().unwrap();
        assert!(matches!(err, StateError::InUse { .. }), "{err}");
        drop(held);
        assert!(open(dir.path(), None).is_ok());
    }

    #[test]
    fn saved_objects_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = open(dir.path(), None).unwrap();
        let mut objects: HashMap<String, Objects> = HashMap::new();
        let web = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7"}});
        objects
            .entry("apps/deployments".into())
            .or_default()
            .insert(("default".into(), "web".into()), web.clone());
        opened.persister.save(9, &objects).unwrap();
        drop(opened);
        let restored = open(dir.path(), None).unwrap().restored.unwrap();
        assert_eq!(restored.rv, 9);
        assert_eq!(
            restored.objects["apps/deployments"][&("default".to_string(), "web".to_string())],
            web
        );
    }

    #[test]
    fn damaged_files_are_errors_naming_the_file() {
        for (text, expect) in [
            (
                "{\"format\":1,\"resourceVersion\":\"5\",\"resou",
                "not JSON",
            ),
            (
                "{\"format\":2,\"resourceVersion\":\"5\",\"resources\":{}}",
                "unknown format",
            ),
            ("{\"format\":1,\"resources\":{}}", "counter"),
            (
                "{\"format\":1,\"resourceVersion\":\"5\",\"resources\":{\"/pods\":[{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"6\"}}]}}",
                "not within",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            objects_file(dir.path(), text);
            let err = open(dir.path(), None).err().expect(text).to_string();
            assert!(err.contains(expect) && err.contains(OBJECTS), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), None).unwrap());
        fs::remove_file(dir.path().join(SERVER_KEY)).unwrap();
        let err = open(dir.path(), None).err().unwrap().to_string();
        assert!(err.contains(SERVER_KEY), "{err}");
    }
}
