//! Atomic, durable file writes. Every file this crate writes (adapter weights, PEFT's
//! `adapter_config.json`, merged weights) is written to a hidden sibling `.<name>.tmp-<pid>`,
//! fsynced, renamed over its final name, and its folder fsynced after: an interrupted write
//! (a kill, a full disk, a read-only folder, a power loss) leaves the previous file or none,
//! never half of one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The temporary sibling `path` is written through: `.<file name>.tmp-<pid>`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Publishes `path` atomically: creates its folder, lets `write` write the whole file to a
/// temporary sibling, flushes it to disk, renames it over `path` and flushes the folder. On
/// any error the temporary file is removed and `path` is as it was; every error names `path`
/// (`write`'s own errors name what it chooses).
pub(crate) fn publish(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = temporary(path);
    let written = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(io_err(path))
    });
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
        return written;
    }
    if cfg!(unix) {
        // The rename reaches the disk with the folder's entries.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably (see the module notes): afterwards `path`
/// holds either its previous content or all of `bytes`, whatever interrupted the write.
/// Errors name `path` (or its folder when that cannot be created or flushed).
pub fn write_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
    let path = path.as_ref();
    publish(path, |tmp| {
        File::create(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(io_err(path))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rocm-lora-publish-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = scratch("failed");
        let file = dir.join("a.safetensors");
        write_atomically(&file, b"old").unwrap();
        let err = publish(&file, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::InvalidConfig("interrupted".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.safetensors"]);
        write_atomically(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unwritable_folder_is_an_error_naming_the_file() {
        let dir = scratch("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file where the folder should be: refused even for root.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let err = write_atomically(blocker.join("a.json"), b"{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocker"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
