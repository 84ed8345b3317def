//! fsync helpers for durable publication: a file or directory renamed into place is only as
//! safe as what reached the disk before the rename (a power loss can otherwise publish a name
//! whose data is missing).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::Error;
use crate::error::io;

/// Flushes one file's data and metadata to disk.
pub(crate) fn sync_file(path: &Path) -> Result<(), Error> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Flushes a directory's entries (names created, renamed or removed in it) to disk. A no-op
/// where directories cannot be opened (Windows).
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    if cfg!(unix) {
        File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(io(path))
    } else {
        Ok(())
    }
}

/// Every file under `dir` (recursively), then `dir` itself and its sub-directories.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_file(&path)?;
        }
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path` and flushes them to disk before returning.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::create(path).map_err(io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tree_reaches_every_file_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("rocm-durable-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        write_synced(&dir.join("a"), b"1").unwrap();
        write_synced(&dir.join("sub/b"), b"2").unwrap();
        sync_tree(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        let missing = dir.join("gone");
        let err = sync_file(&missing).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
