//! The importer: copies this instance's journal into the database in large batches, in chain
//! order, idempotently by `(chain, seq)`, and deletes a segment once all of it is in. The
//! journal is the durability point; the database is the index searches and verification read.
//!
//! It reads the segment files themselves, from where it stopped, up to the last record the
//! syncer made durable, so memory stays flat however long the database is away: the backlog
//! waits on disk, and lag shows in metrics and readiness.

use super::checkpoint::Head;
use super::journal::{self, JournalError};
use super::record::ChainedRecord;
use super::writer::LogStatus;
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// Records per INSERT.
const BATCH: usize = 1000;
/// How long the importer gathers records between two imports under load: the database trails
/// the journal by about this much (readers that must see everything wait for it, see
/// `AccessLog::settled`).
const GATHER: Duration = Duration::from_millis(100);
/// How long to wait before retrying after the database refused a batch.
const RETRY: Duration = Duration::from_secs(1);
/// How often SQLite's write-ahead log is copied back (see the writer for why on this
/// connection).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("journal {path}: record {found} where {expected} of chain {chain} was expected")]
    OutOfOrder {
        path: PathBuf,
        chain: String,
        expected: i64,
        found: String,
    },
    /// The database's newest record of the chain is not the journal's record at that place.
    #[error(
        "chain {chain}: the database's record {seq} is not the one in the journal: someone \
         wrote into this instance's chain in the database; the journal is kept, run \
         `keyhole log verify`"
    )]
    Diverged { chain: String, seq: i64 },
    /// The next record is in no segment, yet later ones exist: a segment was deleted.
    #[error(
        "journal of chain {chain}: record {expected} is in no segment, yet {path} starts at \
         {found} (a segment was deleted); the records in between cannot be imported"
    )]
    Missing {
        path: PathBuf,
        chain: String,
        expected: i64,
        found: u64,
    },
}

/// Where the importer reads next.
struct Cursor {
    /// The segment being read, and the `seq` its first frame has.
    segment: Option<(u64, PathBuf)>,
    offset: u64,
    /// The `seq` of the next record to import.
    next: i64,
}

pub struct Importer {
    store: Store,
    dir: PathBuf,
    chain: String,
    status: Arc<LogStatus>,
    published: watch::Sender<Head>,
    cursor: Cursor,
    last_checkpoint: std::time::Instant,
    database_head: Option<(i64, String)>,
}

impl Importer {
    /// An importer of `chain`'s journal in `dir`; `imported` is the last `seq` the database
    /// already holds (records up to it are skipped, not re-sent).
    pub fn new(
        store: Store,
        dir: &Path,
        chain: &str,
        imported: i64,
        status: Arc<LogStatus>,
        published: watch::Sender<Head>,
    ) -> Self {
        Self {
            store,
            dir: dir.to_owned(),
            chain: chain.to_owned(),
            status,
            published,
            cursor: Cursor {
                segment: None,
                offset: 0,
                next: 1,
            },
            last_checkpoint: std::time::Instant::now(),
            database_head: None,
        }
        .skipping_through(imported)
    }

    /// The chain's newest record in the database at start, `(seq, hash)`: the journal's
    /// record at that place must be the same record before the ones up to it are skipped as
    /// already imported. Otherwise someone else wrote into the chain in the database, and
    /// skipping would drop the genuine records (their segments deleted after the import).
    pub fn checking_against(mut self, database_head: Option<(i64, String)>) -> Self {
        self.database_head = database_head;
        self
    }

    fn skipping_through(self, imported: i64) -> Self {
        self.status.imported.store(imported, Ordering::Release);
        self
    }

    /// Imports everything durable now; returns how many records were added. Used at start,
    /// before the instance serves, and by tests.
    pub async fn catch_up(&mut self) -> Result<u64, ImportError> {
        let mut added = 0;
        loop {
            let (n, read) = self.step().await?;
            added += n;
            if read == 0 {
                return Ok(added);
            }
        }
    }

    /// Runs until `durable` closes: imports whenever the syncer moves, retries after failures.
    pub async fn run(mut self, mut durable: watch::Receiver<i64>) {
        loop {
            match self.step().await {
                Ok((_, 0)) => {
                    tokio::select! {
                        changed = durable.changed() => if changed.is_err() {
                            // The writer stopped: take what it left, then stop too.
                            let _ = self.catch_up().await;
                            return;
                        },
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
                // Under load, gather a while before the next INSERT: one transaction (and, on
                // SQLite, one fsync) per interval instead of one per handful of records. A
                // backlog (a full read) goes on at once.
                Ok((_, read)) if read < BATCH * 4 => tokio::time::sleep(GATHER).await,
                Ok(_) => {}
                // The writer is gone (the app was dropped): nothing more will come.
                Err(_) if durable.has_changed().is_err() => return,
                Err(e) => {
                    tracing::warn!(error = %e, lag = self.status.import_lag(), "importing the access-log journal failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One batch: reads up to [`BATCH`] durable records from the cursor on, imports them, and
    /// deletes the segments that are now wholly in the database. Returns (added, read).
    async fn step(&mut self) -> Result<(u64, usize), ImportError> {
        let started = chrono::Utc::now().timestamp_millis();
        let durable = self.status.durable.load(Ordering::Acquire);
        let (records, advance) = self.read(durable)?;
        let read = records.len();
        if read == 0 {
            self.caught_up(durable, started);
            return Ok((0, 0));
        }
        let mut added = 0;
        for part in records.chunks(BATCH) {
            added += self.store.import_access_records(part).await?;
        }
        if let Some(last) = records.last() {
            self.status.imported.store(last.seq, Ordering::Release);
            self.published
                .send_replace(Some((last.seq, last.hash.clone())));
        }
        (self.cursor.offset, self.cursor.next) = advance;
        self.caught_up(durable, started);
        self.delete_imported_segments()?;
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = self.store.checkpoint().await {
                tracing::warn!(error = %e, "write-ahead log checkpoint failed");
            }
            self.last_checkpoint = std::time::Instant::now();
        }
        Ok((added, read))
    }

    /// Everything durable when the step began is in the database: the lag is at most the
    /// time since then (under steady load the importer is never idle, yet never behind).
    fn caught_up(&self, durable: i64, started: i64) {
        if self.status.imported.load(Ordering::Acquire) >= durable {
            self.status.caught_up_at.store(started, Ordering::Release);
        }
    }

    /// The durable records from the cursor on (at most a few batches), and where the cursor
    /// goes once they are in. Moves to the next segment when this one is read to its end.
    #[allow(clippy::type_complexity)]
    fn read(&mut self, durable: i64) -> Result<(Vec<ChainedRecord>, (u64, i64)), ImportError> {
        let imported = self.status.imported.load(Ordering::Acquire);
        loop {
            if self.cursor.next > durable {
                return Ok((Vec::new(), (self.cursor.offset, self.cursor.next)));
            }
            let Some((_, path)) = self.cursor.segment.clone() else {
                if !self.next_segment()? {
                    return Ok((Vec::new(), (self.cursor.offset, self.cursor.next)));
                }
                continue;
            };
            let contents = journal::read_from(&path, self.cursor.offset)?;
            let mut offset = self.cursor.offset;
            let mut next = self.cursor.next;
            let mut records = Vec::new();
            for payload in contents.frames {
                if next > durable || records.len() >= BATCH * 4 {
                    break;
                }
                let record: ChainedRecord =
                    serde_json::from_slice(&payload).map_err(|e| ImportError::OutOfOrder {
                        path: path.clone(),
                        chain: self.chain.clone(),
                        expected: next,
                        found: format!("an undecodable record ({e})"),
                    })?;
                if record.seq != next || record.chain != self.chain {
                    return Err(ImportError::OutOfOrder {
                        path: path.clone(),
                        chain: self.chain.clone(),
                        expected: next,
                        found: format!("{} of chain {}", record.seq, record.chain),
                    });
                }
                if let Some((seq, hash)) = &self.database_head
                    && record.seq == *seq
                {
                    if record.hash != *hash {
                        return Err(ImportError::Diverged {
                            chain: self.chain.clone(),
                            seq: *seq,
                        });
                    }
                    self.database_head = None;
                }
                offset += journal::framed_len(&payload);
                next += 1;
                if record.seq > imported {
                    records.push(record);
                }
            }
            if next == self.cursor.next {
                // Nothing more here: the rest is in the next segment, if the writer rolled.
                if !self.next_segment()? {
                    return Ok((Vec::new(), (self.cursor.offset, self.cursor.next)));
                }
                continue;
            }
            if records.is_empty() {
                // Only records the database already had: skip past them.
                self.cursor.offset = offset;
                self.cursor.next = next;
                continue;
            }
            return Ok((records, (offset, next)));
        }
    }

    /// Moves the cursor to the segment that starts at `cursor.next`, if there is one. A later
    /// segment without the one that starts there means a segment was deleted: an error, not a
    /// silent stop in front of the hole while the journal grows.
    fn next_segment(&mut self) -> Result<bool, ImportError> {
        let all = journal::segments(&self.dir)?;
        let found = match &self.cursor.segment {
            // From the start: the oldest segment, wherever it starts.
            None => all.into_iter().next(),
            Some((current, _)) => {
                let next = u64::try_from(self.cursor.next).unwrap_or(u64::MAX);
                let mut later = all.into_iter().filter(|(first, _)| first != current);
                match later.find(|(first, _)| *first >= next) {
                    Some((first, path)) if first > next => {
                        return Err(ImportError::Missing {
                            path,
                            chain: self.chain.clone(),
                            expected: self.cursor.next,
                            found: first,
                        });
                    }
                    found => found,
                }
            }
        };
        match found {
            Some((first, path)) => {
                if self.cursor.segment.is_none() {
                    self.cursor.next = i64::try_from(first).unwrap_or(i64::MAX);
                }
                self.cursor.segment = Some((first, path));
                self.cursor.offset = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes every segment older than the one being read: all of it is in the database. The
    /// newest segment is never deleted, so the journal always ends with the chain's head.
    fn delete_imported_segments(&self) -> Result<(), ImportError> {
        let Some((reading, _)) = &self.cursor.segment else {
            return Ok(());
        };
        for (first, path) in journal::segments(&self.dir)? {
            if first >= *reading {
                break;
            }
            std::fs::remove_file(&path).map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
            tracing::debug!(segment = %path.display(), "imported journal segment deleted");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::journal::Journal;
    use crate::access_log::{AccessRecord, GENESIS_HASH, Outcome};
    use crate::store::testing;

    fn record(n: usize) -> AccessRecord {
        AccessRecord {
            at: chrono::Utc::now(),
            request_id: format!("r{n}"),
            client_id: Some("fone-shop".into()),
            grant_id: Some("g-1".into()),
            customer_id: Some("CU-1001".into()),
            resource: "claims".into(),
            resource_id: Some("C-1001".into()),
            record_ids: vec!["C-1001".into()],
            fields: vec!["claims:status".into()],
            outcome: Outcome::Ok,
            status: 200,
            client_ip: None,
        }
    }

    /// Writes `count` records through the journal writer (small segments, so it rolls).
    async fn journal_of(dir: &Path, count: usize) -> Arc<LogStatus> {
        let (journal, _) = Journal::open(dir, 2048, 1).unwrap();
        let (log, status, _) = crate::access_log::writer::testing::journal_log(journal);
        for n in 0..count {
            log.append(record(n)).await.unwrap();
        }
        log.close();
        status
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn importing_twice_leaves_one_copy_and_imported_segments_go() {
        let (store, dir) = testing::store().await;
        let journal_dir = dir.path().join("journal");
        let status = journal_of(&journal_dir, 300).await;
        assert!(
            journal::segments(&journal_dir).unwrap().len() > 3,
            "it rolled"
        );
        let (published, head) = watch::channel(None);
        let mut importer = Importer::new(
            store.clone(),
            &journal_dir,
            "c1",
            0,
            status.clone(),
            published,
        );
        assert_eq!(importer.catch_up().await.unwrap(), 300);
        assert_eq!(status.import_lag(), 0);
        assert_eq!(head.borrow().as_ref().unwrap().0, 300);
        // Only the newest segment is left: everything before it is in the database.
        assert_eq!(journal::segments(&journal_dir).unwrap().len(), 1);

        // A second importer that knows nothing (a crash before the database answered) sends
        // the newest segment again: it adds nothing.
        let again = Arc::new(LogStatus::at(0));
        again.durable.store(300, Ordering::Release);
        let (published, _) = watch::channel(None);
        let mut importer = Importer::new(store.clone(), &journal_dir, "c1", 0, again, published);
        assert_eq!(importer.catch_up().await.unwrap(), 0);
        assert_eq!(store.access_log_after(0, 1000).await.unwrap().len(), 300);
        assert_eq!(store.chain_head("c1").await.unwrap().unwrap().0, 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_record_at_a_taken_place_is_refused_not_skipped() {
        let (store, dir) = testing::store().await;
        let journal_dir = dir.path().join("journal");
        let status = journal_of(&journal_dir, 5).await;
        let (published, _) = watch::channel(None);
        let mut importer = Importer::new(store.clone(), &journal_dir, "c1", 0, status, published);
        importer.catch_up().await.unwrap();
        let mut forged = store.access_log_after(0, 10).await.unwrap();
        forged.truncate(2);
        forged[1].hash = "f".repeat(64);
        assert!(matches!(
            store.import_access_records(&forged).await,
            Err(StoreError::Conflict(_))
        ));
    }

    /// A segment deleted while the instance runs: the importer reports the hole instead of
    /// stopping silently in front of it while the journal grows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_segment_is_an_error_not_a_silent_stall() {
        let (store, dir) = testing::store().await;
        let journal_dir = dir.path().join("journal");
        let status = journal_of(&journal_dir, 300).await;
        let all = journal::segments(&journal_dir).unwrap();
        assert!(all.len() > 3, "it rolled");
        std::fs::remove_file(&all[1].1).unwrap();
        let (published, _) = watch::channel(None);
        let mut importer = Importer::new(store.clone(), &journal_dir, "c1", 0, status, published);
        let result = importer.catch_up().await;
        assert!(
            matches!(result, Err(ImportError::Missing { .. })),
            "{result:?}"
        );
    }

    /// While the instance was down (its journal ahead of the database), a database writer
    /// appended forged records where the journal's genuine ones belong. The importer must not
    /// skip the genuine records as "already imported" (and then delete their segments).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_head_the_journal_does_not_hold_is_refused_not_skipped_past() {
        let (store, dir) = testing::store().await;
        let journal_dir = dir.path().join("journal");
        let status = journal_of(&journal_dir, 5).await;
        let mut fake = record(99);
        fake.customer_id = Some("CU-framed".into());
        let forged = crate::access_log::chain::chain_records(
            [record(98).normalised(), fake.normalised()],
            "c1",
            0,
            GENESIS_HASH.to_owned(),
        );
        store.insert_access_records(forged).await.unwrap();
        let head = store.chain_head("c1").await.unwrap();
        let (published, _) = watch::channel(None);
        let mut importer = Importer::new(store.clone(), &journal_dir, "c1", 2, status, published)
            .checking_against(head);
        let result = importer.catch_up().await;
        assert!(
            matches!(result, Err(ImportError::Diverged { seq: 2, .. })),
            "{result:?}"
        );
        assert_eq!(store.chain_head("c1").await.unwrap().unwrap().0, 2);
    }
}
