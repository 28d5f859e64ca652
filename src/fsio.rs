//! Crash-safe file writes: every file the engine writes whole (checkpoints, policy files, the
//! run folder's config, env and best policy) goes through a temporary file in the same folder,
//! is synced, and then renamed over the target. A crash, a kill or a full disk leaves either
//! the old file or the new one, never a truncated one.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The temporary file `path` is written through (same folder, so the rename is atomic).
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Creates `path`'s folder, lets `write` fill a temporary file beside it, syncs that file and
/// renames it to `path`. On any failure the temporary file is removed and `path` is untouched.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    check_replaceable(path)?;
    let tmp = temporary(path);
    let result = write(&tmp)
        .and_then(|_| {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))
        })
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // The rename itself is durable once the folder is synced (best effort: not every
    // file system can sync a folder).
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Removes the temporary files that a killed writer left in `dir` (names `.NAME.PID.tmp`);
/// returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('.') && name.ends_with(".tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// `path` is new or a regular file (a symbolic link is followed): anything else is refused.
fn check_replaceable(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let kind = if meta.is_dir() {
                "a folder"
            } else {
                "not a regular file (a device, pipe or socket)"
            };
            Err(Error::data(
                path,
                format!("is {kind}; outputs are written only to regular files or new paths, so choose a file path"),
            ))
        }
        _ => Ok(()),
    }
}

/// Checks an output before the work that produces it starts, so that writing it cannot fail
/// after hours of work: its folder exists (it is created), `path` is new or a regular file,
/// and a file can be created in the folder.
pub fn prepare_output(path: &Path) -> Result<()> {
    create_folder(path)?;
    check_replaceable(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = temporary(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            Error::data(
                dir,
                format!(
                    "cannot write here ({e}); choose another path for {}",
                    path.display()
                ),
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// [`prepare_output`] for an output folder (a model directory): created if new, and a file
/// can be written in it.
pub fn prepare_output_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(
            dir,
            "is a file; a model directory is written to a folder, so choose a new path",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    prepare_output(&dir.join("config.json"))
}

/// Creates `path`'s folder.
fn create_folder(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            let why = if dir.ancestors().any(|a| a.is_file()) {
                "a file is in the way".to_string()
            } else {
                e.to_string()
            };
            return Err(Error::data(
                dir,
                format!("cannot create the output folder ({why}); choose another path"),
            ));
        }
    }
    Ok(())
}

/// Appends one line (a newline added) to `path`, created if missing, and flushes it to disk.
/// A crash can tear only this last line; readers skip a last line that does not parse.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|_| file.sync_data())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        let failed = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::data(tmp, "simulated failure"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // What a killed writer leaves behind is cleaned up; other files are not touched.
        std::fs::write(temporary(&path), b"torn").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()), 1);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(remove_stale_temporaries(dir.path()), 0);
    }

    #[test]
    fn only_regular_files_and_new_paths_are_written() {
        let dir = tempfile::tempdir().unwrap();
        for node in [Path::new("/dev/null"), dir.path()] {
            let line = write_atomic(node, b"x").unwrap_err().to_string();
            assert!(line.contains("regular files"), "{line}");
            assert!(prepare_output(node).is_err());
        }
        assert!(Path::new("/dev/null").exists() && dir.path().is_dir());
        let new = dir.path().join("sub/new.json");
        prepare_output(&new).unwrap();
        assert!(!new.exists(), "the check leaves nothing behind");
        assert_eq!(std::fs::read_dir(new.parent().unwrap()).unwrap().count(), 0);
        write_atomic(&new, b"x").unwrap();
        prepare_output(&new).unwrap();
    }
}
