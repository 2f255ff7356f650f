//! Files that hold secrets or customer data (the SQLite database, key files, the journal):
//! created readable by their owner only, and checked when they already exist, because a
//! local user who can read them can sign tokens or read customers' data.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode every such file gets: read and write for the owner, nothing for anyone else.
pub const OWNER_ONLY: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is readable or writable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `path` with mode 0600 and writes `contents`, failing if it already exists (so two
/// starting instances cannot both write a key and keep different ones).
pub fn create_owner_only(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OWNER_ONLY)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    Ok(())
}

/// Opens (creating when absent, mode 0600) a file for appending.
pub fn open_append_owner_only(path: &Path) -> Result<File, FileError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(OWNER_ONLY)
        .open(path)
        .map_err(io_error(path))
}

/// Whether an existing file is closed to everyone but its owner. Absent files pass: they are
/// created 0600 by whoever creates them.
pub fn check_owner_only(path: &Path) -> Result<(), FileError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(FileError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_are_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        create_owner_only(&path, b"k").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, OWNER_ONLY);
        assert!(create_owner_only(&path, b"other").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"k");
        check_owner_only(&path).unwrap();
    }

    #[test]
    fn a_file_readable_by_others_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyhole.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check_owner_only(&path),
            Err(FileError::Exposed { mode: 0o644, .. })
        ));
        check_owner_only(&dir.path().join("absent")).unwrap();
    }
}
