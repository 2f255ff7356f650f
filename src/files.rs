//! Files that hold secrets or customer data (the SQLite database, key files, the journal):
//! created readable by their owner only, and checked when they already exist, because a
//! local user who can read them can sign tokens or read customers' data.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// Another user could have planted it (in a shared directory, say): never trusted.
    #[error("{path} belongs to user {owner}, not to the user the gateway runs as ({ours})")]
    Foreign {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    /// A symlink, a FIFO, a directory: a planted FIFO would hang the start, a symlink could
    /// point anywhere.
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes: not a key")]
    TooLarge { path: PathBuf, limit: u64 },
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

/// The user this process runs as, from the owner of `/proc/self` (no `unsafe` for geteuid);
/// `None` where there is no procfs, and then ownership is not checked.
pub fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether an existing file is a regular file of ours, closed to everyone else. Absent files
/// pass: they are created 0600 by whoever creates them. Symlinks are not followed.
pub fn check_owner_only(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_file() {
                return Err(FileError::NotAFile {
                    path: path.to_owned(),
                });
            }
            if let Some(ours) = current_uid()
                && meta.uid() != ours
            {
                return Err(FileError::Foreign {
                    path: path.to_owned(),
                    owner: meta.uid(),
                    ours,
                });
            }
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

/// Reads a small text file (a key) of at most `limit` bytes: a huge or endless file is refused
/// instead of read into memory.
pub fn read_small(path: &Path, limit: u64) -> Result<String, FileError> {
    let file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(io_error(path))?;
    if text.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(text)
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

    #[test]
    fn symlinks_directories_and_other_users_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.key");
        create_owner_only(&target, b"k").unwrap();
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            check_owner_only(&link),
            Err(FileError::NotAFile { .. })
        ));
        assert!(matches!(
            check_owner_only(dir.path()),
            Err(FileError::NotAFile { .. })
        ));
        // Only root can give a file away; elsewhere this part has nothing to show.
        if std::os::unix::fs::chown(&target, Some(65534), None).is_ok() {
            assert!(matches!(
                check_owner_only(&target),
                Err(FileError::Foreign { owner: 65534, .. })
            ));
        }
    }

    #[test]
    fn a_huge_key_file_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.key");
        create_owner_only(&path, &[b'a'; 10_000]).unwrap();
        assert!(matches!(
            read_small(&path, 4096),
            Err(FileError::TooLarge { .. })
        ));
        create_owner_only(&dir.path().join("small.key"), b"key").unwrap();
        assert_eq!(
            read_small(&dir.path().join("small.key"), 4096).unwrap(),
            "key"
        );
    }
}
