//! The store's database file, and whether the file at its path is still the one opened.
//!
//! SQLite keeps writing through the descriptors it opened: a store deleted or replaced while
//! the daemon runs would accept writes into an unlinked inode that nobody will ever read again.
//! So the device and inode of the path are recorded at open ([`StoreFile::identify`]) and every
//! write transaction, and `/readyz`, compares them with the path again ([`StoreFile::check`]).
//! One `stat` costs about a microsecond (docs/store.md), nothing beside the fsyncs of a commit.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// Whether `url` names a store in memory (`sqlite::memory:`, `?mode=memory`): no file to check.
pub(super) fn in_memory(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// The URL the pool's connections open `path` with: read-write, never creating it (only the
/// store's first connection may), and with the characters a URL would take for its own
/// escaped. Every connection parses it again, so it must name exactly this file.
pub(super) fn pool_url(path: &Path) -> String {
    let path = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    format!("sqlite:{path}?mode=rw")
}

/// The database file as opened: its path with the device and inode found there at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StoreFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl StoreFile {
    /// Records what is at `path` now; called once the store is open and migrated.
    pub(super) fn identify(path: &Path) -> io::Result<StoreFile> {
        let meta = std::fs::metadata(path)?;
        Ok(StoreFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// `Ok` while the path still names the file opened; an error once it was deleted, moved
    /// away or replaced (a restored backup is another inode: restart to use it).
    pub(super) fn check(&self) -> Result<()> {
        let meta = std::fs::metadata(&self.path).map_err(|source| StoreError::FileGone {
            path: self.path.display().to_string(),
            source,
        })?;
        if (meta.dev(), meta.ino()) == (self.dev, self.ino) {
            Ok(())
        } else {
            Err(StoreError::FileReplaced {
                path: self.path.display().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_have_no_file() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://:memory:"));
        assert!(in_memory("sqlite://x.db?cache=shared&mode=memory"));
        assert!(!in_memory("sqlite://dir/x.db?mode=rwc"));
        assert!(!in_memory("sqlite:///abs/x.db"));
    }

    #[test]
    fn the_pool_url_names_the_file_and_never_creates_it() {
        assert_eq!(
            pool_url(Path::new("/a b/x?#%.db")),
            "sqlite:/a b/x%3F%23%25.db?mode=rw"
        );
        assert_eq!(pool_url(Path::new("rel.db")), "sqlite:rel.db?mode=rw");
    }

    #[test]
    fn a_replaced_or_deleted_file_is_not_the_one_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        std::fs::write(&path, "a").expect("write");
        let file = StoreFile::identify(&path).expect("identify");
        file.check().expect("same file");
        std::fs::write(dir.path().join("other"), "b").expect("write");
        std::fs::rename(dir.path().join("other"), &path).expect("replace");
        assert!(matches!(file.check(), Err(StoreError::FileReplaced { .. })));
        std::fs::remove_file(&path).expect("delete");
        assert!(matches!(file.check(), Err(StoreError::FileGone { .. })));
    }
}
