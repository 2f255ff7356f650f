//! The journal's storage (issue 12, groundwork): append-only segment files in `journal_dir`,
//! one per range of the instance's chain, written a batch at a time with one `write` and one
//! `fdatasync`. Not yet wired into the writer; the group commit and the importer build on it.
//!
//! A frame is `len: u32 LE | crc: u32 LE | payload`, the CRC-32 covering the length and the
//! payload, so a torn or garbled tail after a crash is detected — and cut — never misread as a
//! record. Only the newest segment can have a torn tail: a segment is closed (synced) before the
//! next one is started, and segments follow each other without a gap.

use crate::files::{FileError, OWNER_ONLY};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest payload a frame may carry: a record is a few hundred bytes, and a length beyond
/// this is corruption, not a record.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 8;
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".journal";
/// The instance's writer id, its chain: created once, then the same at every start.
const CHAIN_FILE: &str = "chain-id";
/// Locked by the process writing the journal.
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("a journal frame of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("journal {0}: the chain id file is not a chain id")]
    BadChainId(PathBuf),
    #[error("journal {0}: unreadable at byte {1}, in a segment that is not the newest")]
    Corrupt(PathBuf, u64),
    #[error(
        "journal directory {path} can be written by other users (mode {mode:o}), who could \
         delete or plant segments; run `chmod go-w {path}` or use a directory of its own"
    )]
    DirExposed { path: PathBuf, mode: u32 },
    #[error(
        "journal directory {path} belongs to user {owner}, not to the user the gateway runs as \
         ({ours})"
    )]
    DirForeign {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    /// Records between two segments are in neither: a segment was deleted or lost.
    #[error(
        "journal {path}: starts at record {found} where {expected} was expected (a segment \
         before it is missing)"
    )]
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "journal {0} is in use by another process (each instance needs a journal_dir of its own)"
    )]
    Locked(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), JournalError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(JournalError::TooLarge(payload.len()));
    }
    let len = u32::try_from(payload.len())
        .map_err(|_| JournalError::TooLarge(payload.len()))?
        .to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What reading a segment found: its frames, and where a torn tail began, if one did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SegmentContents {
    pub frames: Vec<Vec<u8>>,
    /// Offset of the first byte that is not a whole, valid frame, and how many bytes follow.
    pub torn: Option<(u64, u64)>,
}

/// Splits `bytes` into frames, stopping at the first one that is short or fails its check.
pub fn parse(bytes: &[u8]) -> SegmentContents {
    let mut contents = SegmentContents::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER) else {
            break;
        };
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if checksum(len_bytes, payload) != crc {
            break;
        }
        contents.frames.push(payload.to_vec());
        at += HEADER + len;
    }
    if at < bytes.len() {
        contents.torn = Some((at as u64, (bytes.len() - at) as u64));
    }
    contents
}

fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The segments of `dir`, oldest first, with the sequence number each starts at.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((first, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The instance's chain id, created (0600) on the first start in `dir`.
pub fn chain_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join(CHAIN_FILE);
    crate::files::check_owner_only(&path)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(JournalError::BadChainId(path));
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            crate::files::create_owner_only(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// The open end of the journal: the newest segment, appended to a batch at a time.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    next_seq: u64,
    /// Held for the journal's life: a second process on the same directory would interleave
    /// two writers' frames in one chain.
    _lock: File,
}

/// What opening found: the last whole frame (where the chain continues) and the torn tail that
/// was cut, if any. The frames themselves stay on disk for the importer.
#[derive(Debug, Default)]
pub struct Recovered {
    pub last: Option<(u64, Vec<u8>)>,
    /// How many whole frames the journal holds.
    pub frames: u64,
    pub torn: Option<(PathBuf, u64, u64)>,
}

impl Journal {
    /// Opens `dir` (created 0700 when absent), locks it, reads what it holds, cuts a torn tail
    /// off the newest segment, and positions the next append after the last whole frame. An
    /// empty journal continues at `start_seq` (where the database's copy of the chain ends).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        start_seq: u64,
    ) -> Result<(Self, Recovered), JournalError> {
        create_dir(dir)?;
        let lock = lock_dir(dir)?;
        let mut recovered = Recovered::default();
        let mut next_seq = start_seq;
        let mut newest = None;
        let all = segments(dir)?;
        let last = all.len().saturating_sub(1);
        for (index, (first, path)) in all.into_iter().enumerate() {
            crate::files::check_owner_only(&path)?;
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_error(&path))?;
            let contents = parse(&bytes);
            // Only the newest segment was being written at a crash; damage anywhere else is
            // not a torn tail but corruption, and skipping it would renumber the chain.
            if let Some((offset, _)) = contents.torn
                && index != last
            {
                return Err(JournalError::Corrupt(path, offset));
            }
            // Each segment starts where the one before ended: a hole means records are lost,
            // and continuing past it would hide that (the importer would stop at the hole).
            if index > 0 && first != next_seq {
                return Err(JournalError::Gap {
                    path,
                    expected: next_seq,
                    found: first,
                });
            }
            let count = contents.frames.len() as u64;
            recovered.frames += count;
            next_seq = first.checked_add(count).ok_or(JournalError::Gap {
                path: path.clone(),
                expected: next_seq,
                found: first,
            })?;
            if let Some(payload) = contents.frames.into_iter().last() {
                recovered.last = Some((next_seq - 1, payload));
            }
            if let Some((offset, bytes)) = contents.torn {
                recovered.torn = Some((path.clone(), offset, bytes));
            }
            newest = Some((path, contents.torn.map_or(bytes.len() as u64, |(o, _)| o)));
        }
        let (path, len) = match newest {
            Some((path, valid)) => (path, valid),
            None => (dir.join(segment_name(next_seq)), 0),
        };
        let mut file = open_segment(&path)?;
        // Cut what a crash left half-written, so the next frame follows the last whole one;
        // and make what a crashed process wrote but never synced durable before anyone reads
        // it as the journal.
        file.set_len(len).map_err(io_error(&path))?;
        file.sync_data().map_err(io_error(&path))?;
        sync_dir(dir)?;
        std::io::Seek::seek(&mut file, io::SeekFrom::Start(len)).map_err(io_error(&path))?;
        Ok((
            Self {
                dir: dir.to_owned(),
                segment_bytes,
                file: Arc::new(file),
                path,
                len,
                next_seq,
                _lock: lock,
            },
            recovered,
        ))
    }

    /// The sequence number the next appended frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends a batch of payloads with one `write`; they are durable once the returned file
    /// is synced (see [`sync`]), which another thread may do while the next batch is written.
    /// Returns the sequence number of the first.
    /// A payload too large for a frame is refused before anything is written.
    pub fn write(&mut self, payloads: &[Vec<u8>]) -> Result<(u64, Arc<File>), JournalError> {
        let mut batch = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
        for payload in payloads {
            frame(&mut batch, payload)?;
        }
        if self.len >= self.segment_bytes {
            self.roll()?;
        }
        let first = self.next_seq;
        (&*self.file)
            .write_all(&batch)
            .map_err(io_error(&self.path))?;
        self.len += batch.len() as u64;
        self.next_seq += payloads.len() as u64;
        Ok((first, self.file.clone()))
    }

    /// Appends a batch and syncs it: durable when this returns.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<u64, JournalError> {
        let (first, file) = self.write(payloads)?;
        sync(&file).map_err(io_error(&self.path))?;
        Ok(first)
    }

    /// Closes the full segment (synced first) and starts the next. Without that sync a power
    /// loss could keep the new segment's name yet lose the old one's last, never answered,
    /// frames: a torn or short segment that is not the newest, which reads as corruption
    /// (or a gap) and stops the instance from starting.
    fn roll(&mut self) -> Result<(), JournalError> {
        sync(&self.file).map_err(io_error(&self.path))?;
        let path = self.dir.join(segment_name(self.next_seq));
        self.file = Arc::new(open_segment(&path)?);
        // The new file's name must survive a crash too.
        sync_dir(&self.dir)?;
        self.path = path;
        self.len = 0;
        Ok(())
    }
}

/// Creates the journal directory (0700) when it does not exist yet, and refuses one that is
/// not ours or that other users can write: they could delete a segment of answered records
/// not yet in the database (the journal is their only copy), or plant files that stop the
/// start. The files' own checks cannot catch a deletion.
pub fn create_dir(dir: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(io_error(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io_error(dir))?;
    if let Some(ours) = crate::files::current_uid()
        && meta.uid() != ours
    {
        return Err(JournalError::DirForeign {
            path: dir.to_owned(),
            owner: meta.uid(),
            ours,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    // Even with the sticky bit others can plant files, and a planted segment stops the start.
    if mode & 0o022 != 0 {
        return Err(JournalError::DirExposed {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// `fdatasync`: the batches written to `file` are durable when it returns.
pub fn sync(file: &File) -> io::Result<()> {
    file.sync_data()
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Takes the journal directory's lock, or fails at once when another process holds it.
fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(OWNER_ONLY)
        .open(&path)
        .map_err(io_error(&path))?;
    file.try_lock()
        .map_err(|_| JournalError::Locked(dir.to_owned()))?;
    Ok(file)
}

/// The frames of one segment from byte `offset` on: what the importer reads as the writer
/// goes. A frame still being written reads as a torn tail and is simply not returned yet.
pub fn read_from(path: &Path, offset: u64) -> Result<SegmentContents, JournalError> {
    use std::io::Seek;
    let mut file = File::open(path).map_err(io_error(path))?;
    file.seek(io::SeekFrom::Start(offset))
        .map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    Ok(parse(&bytes))
}

/// The byte length of `payload` as a frame.
pub fn framed_len(payload: &[u8]) -> u64 {
    (HEADER + payload.len()) as u64
}

fn open_segment(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(OWNER_ONLY)
        .open(path)
        .map_err(io_error(path))
        .and_then(|mut f| {
            use std::io::Seek;
            f.seek(io::SeekFrom::End(0)).map_err(io_error(path))?;
            Ok(f)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn payloads(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        range.map(|i| format!("record {i}").into_bytes()).collect()
    }

    #[test]
    fn batches_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        let (mut journal, recovered) = Journal::open(&journal_dir, 64, 1).unwrap();
        assert_eq!(recovered.frames, 0);
        for start in [1, 4, 7] {
            let batch = payloads(start..start + 3);
            assert_eq!(journal.append(&batch).unwrap(), start);
        }
        assert!(segments(&journal_dir).unwrap().len() > 1, "it rolled");
        drop(journal);
        let (journal, recovered) = Journal::open(&journal_dir, 64, 1).unwrap();
        assert_eq!(recovered.frames, 9);
        assert_eq!(recovered.last, Some((9, b"record 9".to_vec())));
        let mut read = Vec::new();
        for (first, path) in segments(&journal_dir).unwrap() {
            let contents = read_from(&path, 0).unwrap();
            assert_eq!(first, read.len() as u64 + 1);
            read.extend(contents.frames);
        }
        assert_eq!(read, payloads(1..10));
        assert_eq!(journal.next_seq(), 10);
        assert!(recovered.torn.is_none());
        for (_, path) in segments(&journal_dir).unwrap() {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_reported_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 1 << 20, 1).unwrap();
        journal.append(&payloads(1..4)).unwrap();
        let path = journal.path.clone();
        drop(journal);
        let whole = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the next batch: a header and half a payload.
        let mut torn = Vec::new();
        frame(&mut torn, b"record 4, never finished").unwrap();
        torn.truncate(HEADER + 5);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn).unwrap();
        drop(file);

        let (mut journal, recovered) = Journal::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(recovered.frames, 3);
        assert_eq!(
            recovered.torn,
            Some((path.clone(), whole, torn.len() as u64))
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "cut");
        assert_eq!(journal.append(&[b"record 4".to_vec()]).unwrap(), 4);
        drop(journal);
        let (_, recovered) = Journal::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(recovered.frames, 4);
        assert!(recovered.torn.is_none());
    }

    #[test]
    fn a_garbled_frame_ends_the_readable_journal() {
        let mut bytes = Vec::new();
        for p in payloads(1..4) {
            frame(&mut bytes, &p).unwrap();
        }
        let second = HEADER + b"record 1".len();
        bytes[second + HEADER + 2] ^= 0xff;
        let contents = parse(&bytes);
        assert_eq!(contents.frames, vec![b"record 1".to_vec()]);
        assert_eq!(
            contents.torn,
            Some((second as u64, (bytes.len() - second) as u64))
        );
        // A length beyond any record is corruption too.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 12]);
        assert_eq!(parse(&huge).frames.len(), 0);
        assert!(parse(&huge).torn.is_some());
    }

    #[test]
    fn damage_in_an_older_segment_is_corruption_not_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 16, 1).unwrap();
        journal.append(&payloads(1..3)).unwrap();
        journal.append(&payloads(3..5)).unwrap();
        drop(journal);
        let (_, oldest) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&oldest).unwrap();
        bytes[HEADER] ^= 0xff;
        std::fs::write(&oldest, bytes).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), 16, 1),
            Err(JournalError::Corrupt(_, 0))
        ));
    }

    #[test]
    fn an_empty_journal_continues_where_the_database_ends_and_one_process_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 1 << 20, 41).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), 1 << 20, 41),
            Err(JournalError::Locked(_))
        ));
        assert_eq!(journal.append(&payloads(41..43)).unwrap(), 41);
        drop(journal);
        let (journal, recovered) = Journal::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(journal.next_seq(), 43);
        assert_eq!(recovered.last.unwrap().0, 42);
    }

    #[test]
    fn the_chain_id_is_made_once_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = chain_id(dir.path()).unwrap();
        assert_eq!(chain_id(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join(CHAIN_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(dir.path().join(CHAIN_FILE), "../../etc").unwrap();
        assert!(matches!(
            chain_id(dir.path()),
            Err(JournalError::BadChainId(_))
        ));
    }

    /// A segment missing between two others (deleted, or lost in a crash) leaves records that
    /// are nowhere: reading on past it would stall the importer at the hole for ever.
    #[test]
    fn a_missing_segment_between_two_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 16, 1).unwrap();
        for start in [1, 3, 5] {
            journal.append(&payloads(start..start + 2)).unwrap();
        }
        drop(journal);
        let all = segments(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        std::fs::remove_file(&all[1].1).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), 16, 1),
            Err(JournalError::Gap {
                expected: 3,
                found: 5,
                ..
            })
        ));
    }

    /// Another user who can write the directory can delete a segment of durable, answered
    /// records that are not in the database yet, or plant files that stop the start.
    #[test]
    fn a_journal_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        std::fs::create_dir(&journal_dir).unwrap();
        std::fs::set_permissions(&journal_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            Journal::open(&journal_dir, 1 << 20, 1),
            Err(JournalError::DirExposed { mode: 0o777, .. })
        ));
        std::fs::set_permissions(&journal_dir, std::fs::Permissions::from_mode(0o1733)).unwrap();
        assert!(Journal::open(&journal_dir, 1 << 20, 1).is_err(), "sticky");
        // Readable by others is the operator's choice (the files in it are 0600).
        std::fs::set_permissions(&journal_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Journal::open(&journal_dir, 1 << 20, 1).unwrap();
    }
}
