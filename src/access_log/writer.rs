//! The group-commit writer. Calls enqueue a record and wait; a writer thread takes everything
//! queued as one batch, chains it onto this instance's chain and makes it durable in one step:
//!
//! - `durability = "journal"`: one `write` to the journal, then one `fdatasync` on a second
//!   thread, so the next batch is written while this one syncs (the importer copies it into the
//!   database afterwards, see `import`);
//! - `durability = "database"`: one multi-row INSERT (one transaction, one fsync).
//!
//! Each batch is settled once: its waiters are woken together, never one wake-up per call
//! from the writer's side. Under load batches grow, so the cost per call falls as the rate
//! rises.

use super::chain::chain_records;
use super::checkpoint::Head;
use super::journal::{self, Journal, JournalError};
use super::record::{AccessRecord, ChainedRecord};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Calls waiting beyond this many fail at once instead of queueing without bound.
const QUEUE: usize = 16 * 1024;
/// The most records one INSERT carries (16 parameters each stays below every limit).
const MAX_INSERT: usize = 1000;
/// A commit whose answer was lost went through: re-read the chain's head and retry.
const CONFLICT_RETRIES: usize = 3;
/// How often the database writer copies SQLite's write-ahead log back into the database. It
/// does so on its own connection between batches, so the checkpoint has caught up when the next
/// batch starts and SQLite rewinds the log to its beginning. A checkpoint on another connection
/// races the writer and never catches up: the log then grows without bound.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How long a reader waits for the importer before answering with what the database holds.
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("the access log could not be written: {0}")]
    Write(String),
    #[error("the access log writer is not running")]
    Stopped,
    #[error("the access log queue is full")]
    Overloaded,
}

/// One batch's fate, shared by its waiters: set once, then everyone is woken together.
#[derive(Default)]
struct Batch {
    /// The `seq` of the batch's first record, or why the batch failed.
    result: OnceLock<Result<i64, LogError>>,
    done: Notify,
}

impl Batch {
    fn settle(&self, result: Result<i64, LogError>) {
        let _ = self.result.set(result);
        self.done.notify_waiters();
    }

    async fn wait(&self) -> Result<i64, LogError> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before the check, so a settle between the two still wakes us.
            notified.as_mut().enable();
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            notified.await;
        }
    }
}

struct Queue {
    records: Vec<AccessRecord>,
    /// The batch the queued records will be settled with.
    open: Arc<Batch>,
    /// The batch the writer took last: batches settle in order, so it settles after every
    /// earlier one (what `flush` waits for).
    taken: Option<Arc<Batch>>,
    writer_waiting: bool,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    /// The next batch, or `None` once closed and drained. Blocks the writer thread.
    fn take(&self) -> Option<(Vec<AccessRecord>, Arc<Batch>)> {
        let mut queue = self.queue.lock();
        while queue.records.is_empty() {
            if queue.closed {
                return None;
            }
            queue.writer_waiting = true;
            self.wake.wait(&mut queue);
            queue.writer_waiting = false;
        }
        let records = std::mem::take(&mut queue.records);
        let batch = std::mem::take(&mut queue.open);
        queue.taken = Some(batch.clone());
        Some((records, batch))
    }
}

/// What the checkpointer, the importer and readiness see of the writer.
pub struct LogStatus {
    /// The last `seq` durable at the durability point (journal or database).
    pub durable: AtomicI64,
    /// The last `seq` in the database (equal to `durable` with `durability = "database"`).
    pub imported: AtomicI64,
    /// When the importer last had everything durable at that moment (ms since the epoch).
    pub caught_up_at: AtomicI64,
    /// The journal failed to write or sync: every later call fails until a restart.
    pub broken: AtomicBool,
}

#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
    /// Held by the handles only, never by the writer's threads: when the last handle goes (the
    /// app is dropped), the writer is closed, drains what is queued and stops; the sync thread
    /// and the importer follow, and their database connections and the journal's lock go with
    /// them instead of outliving the app.
    _closer: Arc<Closer>,
    chain: Arc<str>,
    head: watch::Receiver<Head>,
    status: Arc<LogStatus>,
}

struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.queue.lock().closed = true;
        self.0.wake.notify_all();
    }
}

/// Where a chain continues: the last `seq` and its hash.
pub type ChainHead = (i64, String);

impl AccessLog {
    fn new(chain: &str, head: watch::Receiver<Head>, status: Arc<LogStatus>) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                records: Vec::new(),
                open: Arc::default(),
                taken: None,
                writer_waiting: false,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        Self {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
            chain: chain.into(),
            head,
            status,
        }
    }

    /// `durability = "database"`: each batch is one INSERT into `chain`, which continues at
    /// `from`. `store` should be a connection of the writer's own.
    pub fn start_database(
        store: Store,
        chain: &str,
        from: ChainHead,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let status = Arc::new(LogStatus::at(from.0));
        let (head_tx, head) = watch::channel(Some(from.clone()));
        let log = Self::new(chain, head, status.clone());
        let writer = DatabaseWriter {
            store,
            chain: chain.to_owned(),
            head: from,
            metrics,
            published: head_tx,
            status,
            runtime: tokio::runtime::Handle::current(),
            checkpointed: Instant::now(),
            unconfirmed: Vec::new(),
        };
        let shared = log.shared.clone();
        std::thread::Builder::new()
            .name("access-log-db".into())
            .spawn(move || writer.run(&shared))?;
        Ok(log)
    }

    /// `durability = "journal"`: each batch is one write to `journal` and one `fdatasync`.
    /// `head` is the journal's last record (or the database's, for an empty journal);
    /// `imported` follows the importer, whose head the checkpointer signs.
    pub fn start_journal(
        journal: Journal,
        chain: &str,
        from: ChainHead,
        status: Arc<LogStatus>,
        imported: watch::Receiver<Head>,
        durable: watch::Sender<i64>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let log = Self::new(chain, imported, status.clone());
        // A rendezvous: the writer hands a written batch over only when the syncer takes it, so
        // at most one batch is written while another syncs, and everything that arrives
        // during a sync becomes one write and one batch — not a write per call.
        let (to_sync, synced) = mpsc::sync_channel(0);
        let writer = JournalWriter {
            journal,
            chain: chain.to_owned(),
            head: from,
            status: status.clone(),
            to_sync,
        };
        let syncer = Syncer {
            status,
            durable,
            metrics,
        };
        let shared = log.shared.clone();
        std::thread::Builder::new()
            .name("access-log-sync".into())
            .spawn(move || syncer.run(&synced))?;
        std::thread::Builder::new()
            .name("access-log-journal".into())
            .spawn(move || writer.run(&shared))?;
        Ok(log)
    }

    /// This instance's chain.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The chain's head as the database holds it, after each commit or import; the
    /// checkpointer follows it.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.clone()
    }

    pub fn status(&self) -> &LogStatus {
        &self.status
    }

    /// Waits (at most [`SETTLE_WAIT`]) until the database holds every record this instance
    /// made durable before the call: a search or a customer's history then shows every read
    /// this instance answered before it, although the journal is imported in the background.
    /// Nothing to wait for in database mode, or when the importer keeps up (it usually has).
    pub async fn settled(&self) {
        let target = self.status.durable.load(Ordering::Acquire);
        if self.status.imported.load(Ordering::Acquire) >= target {
            return;
        }
        let mut head = self.head.clone();
        let status = &self.status;
        let caught_up = head.wait_for(|_| status.imported.load(Ordering::Acquire) >= target);
        if tokio::time::timeout(SETTLE_WAIT, caught_up).await.is_err() {
            tracing::warn!(
                lag = status.import_lag(),
                "the access log's database copy is behind its journal; answering with what it holds"
            );
        }
    }

    /// Appends a record and returns its `seq` once it is durable.
    pub async fn append(&self, record: AccessRecord) -> Result<i64, LogError> {
        let (batch, index) = {
            let mut queue = self.shared.queue.lock();
            if queue.closed {
                return Err(LogError::Stopped);
            }
            if queue.records.len() >= QUEUE {
                return Err(LogError::Overloaded);
            }
            queue.records.push(record.normalised());
            // Only the first record of a batch wakes an idle writer; the rest ride along.
            if queue.writer_waiting && queue.records.len() == 1 {
                self.shared.wake.notify_one();
            }
            (queue.open.clone(), queue.records.len() - 1)
        };
        let first = batch.wait().await?;
        Ok(first + index as i64)
    }

    /// Waits until everything appended before this call is settled (used on shutdown).
    pub async fn flush(&self) {
        let batch = {
            let queue = self.shared.queue.lock();
            if queue.records.is_empty() {
                queue.taken.clone()
            } else {
                Some(queue.open.clone())
            }
        };
        if let Some(batch) = batch {
            let _ = batch.wait().await;
        }
    }

    /// Refuses further appends; the writer finishes what is queued and stops.
    pub fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl LogStatus {
    pub fn at(seq: i64) -> Self {
        Self {
            durable: AtomicI64::new(seq),
            imported: AtomicI64::new(seq),
            caught_up_at: AtomicI64::new(chrono::Utc::now().timestamp_millis()),
            broken: AtomicBool::new(false),
        }
    }

    /// Records durable in the journal but not yet in the database.
    pub fn import_lag(&self) -> i64 {
        (self.durable.load(Ordering::Acquire) - self.imported.load(Ordering::Acquire)).max(0)
    }
}

struct JournalWriter {
    journal: Journal,
    chain: String,
    head: ChainHead,
    status: Arc<LogStatus>,
    to_sync: mpsc::SyncSender<Written>,
}

/// A batch written to the journal, waiting for its `fdatasync`.
struct Written {
    batch: Arc<Batch>,
    file: Arc<File>,
    first: i64,
    last: i64,
    records: usize,
    started: Instant,
}

impl JournalWriter {
    fn run(mut self, shared: &Shared) {
        while let Some((records, batch)) = shared.take() {
            let started = Instant::now();
            if self.status.broken.load(Ordering::Acquire) {
                batch.settle(Err(LogError::Write(
                    "the journal failed earlier; restart the instance".into(),
                )));
                continue;
            }
            let count = records.len();
            match self.write(records) {
                Ok((first, last, file)) => {
                    let written = Written {
                        batch,
                        file,
                        first,
                        last,
                        records: count,
                        started,
                    };
                    if let Err(mpsc::SendError(written)) = self.to_sync.send(written) {
                        written.batch.settle(Err(LogError::Stopped));
                    }
                }
                // Framing refused a record before anything was written, and the head did not
                // move: the journal is intact, only this batch fails.
                Err(e @ JournalError::TooLarge(_)) => {
                    tracing::error!(error = %e, records = count, "an access-log record is too large for the journal");
                    batch.settle(Err(LogError::Write(e.to_string())));
                }
                Err(e) => {
                    // What reached the file is unknown: stop here rather than chain onto it.
                    tracing::error!(error = %e, "the access-log journal cannot be written");
                    self.status.broken.store(true, Ordering::Release);
                    batch.settle(Err(LogError::Write(e.to_string())));
                }
            }
        }
    }

    fn write(&mut self, records: Vec<AccessRecord>) -> Result<(i64, i64, Arc<File>), JournalError> {
        let (seq, hash) = &self.head;
        let chained = chain_records(records, &self.chain, *seq, hash.clone());
        let payloads: Vec<Vec<u8>> = chained.iter().map(encode).collect();
        let (first, file) = self.journal.write(&payloads)?;
        let first = i64::try_from(first).unwrap_or(i64::MAX);
        if let Some(last) = chained.last() {
            debug_assert_eq!(first, seq + 1);
            self.head = (last.seq, last.hash.clone());
        }
        Ok((first, self.head.0, file))
    }
}

/// A journal record: the chained record as JSON (its database id is not known yet).
pub fn encode(record: &ChainedRecord) -> Vec<u8> {
    // Serialising strings and numbers cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

struct Syncer {
    status: Arc<LogStatus>,
    durable: watch::Sender<i64>,
    metrics: Arc<Metrics>,
}

impl Syncer {
    fn run(self, written: &mpsc::Receiver<Written>) {
        while let Ok(first) = written.recv() {
            // Everything written meanwhile rides on the same fdatasync.
            let mut group = vec![first];
            group.extend(written.try_iter());
            let mut result = if self.status.broken.load(Ordering::Acquire) {
                Err("the journal failed earlier; restart the instance".to_owned())
            } else {
                Ok(())
            };
            let mut synced: Option<&Arc<File>> = None;
            for w in &group {
                if result.is_err() {
                    break;
                }
                // A segment rolled mid-group: the older file is synced first.
                if synced.is_none_or(|f| !Arc::ptr_eq(f, &w.file)) {
                    if let Some(previous) = synced {
                        result = journal::sync(previous).map_err(|e| e.to_string());
                    }
                    synced = Some(&w.file);
                }
            }
            if let (Ok(()), Some(file)) = (&result, synced) {
                result = journal::sync(file).map_err(|e| e.to_string());
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "the access-log journal cannot be synced");
                self.status.broken.store(true, Ordering::Release);
            }
            for w in group {
                self.metrics
                    .observe_log_batch(w.records, w.started.elapsed(), result.is_ok());
                match &result {
                    Ok(()) => {
                        self.status.durable.store(w.last, Ordering::Release);
                        w.batch.settle(Ok(w.first));
                    }
                    Err(e) => w.batch.settle(Err(LogError::Write(e.clone()))),
                }
            }
            if result.is_ok() {
                self.durable
                    .send_replace(self.status.durable.load(Ordering::Acquire));
            }
        }
    }
}

struct DatabaseWriter {
    store: Store,
    chain: String,
    head: ChainHead,
    metrics: Arc<Metrics>,
    published: watch::Sender<Head>,
    status: Arc<LogStatus>,
    runtime: tokio::runtime::Handle,
    checkpointed: Instant,
    /// `(seq, hash)` of the records of the last batch whose commit failed: it may have gone
    /// through (in part) although its answer was lost. Only these may be found beyond `head`.
    unconfirmed: Vec<(i64, String)>,
}

impl DatabaseWriter {
    fn run(mut self, shared: &Shared) {
        while let Some((records, batch)) = shared.take() {
            let started = Instant::now();
            let count = records.len();
            let result = self.commit(records);
            self.metrics
                .observe_log_batch(count, started.elapsed(), result.is_ok());
            if let Err(e) = &result {
                tracing::error!(error = %e, records = count, "access log batch failed");
            }
            batch.settle(result);
            if self.checkpointed.elapsed() >= CHECKPOINT_EVERY {
                if let Err(e) = self.runtime.block_on(self.store.checkpoint()) {
                    tracing::warn!(error = %e, "write-ahead log checkpoint failed");
                }
                self.checkpointed = Instant::now();
            }
        }
    }

    fn commit(&mut self, records: Vec<AccessRecord>) -> Result<i64, LogError> {
        let mut result = Err(LogError::Write("not attempted".into()));
        for _ in 0..CONFLICT_RETRIES {
            let (seq, hash) = self.head.clone();
            let chained = chain_records(records.iter().cloned(), &self.chain, seq, hash);
            let last = chained.last().map(|r| (r.seq, r.hash.clone()));
            let inserted = self.runtime.block_on(async {
                for part in chained.chunks(MAX_INSERT) {
                    self.store.insert_access_records(part.to_vec()).await?;
                }
                Ok::<_, StoreError>(())
            });
            match inserted {
                Ok(()) => {
                    if let Some(last) = last {
                        self.head = last;
                        self.status.durable.store(self.head.0, Ordering::Release);
                        self.status.imported.store(self.head.0, Ordering::Release);
                        self.published.send_replace(Some(self.head.clone()));
                    }
                    self.unconfirmed.clear();
                    return Ok(seq + 1);
                }
                // The chain moved under us. The chain is this process's alone, so the only
                // honest cause is an earlier batch committed although its answer was lost:
                // continue after it, but only if the database's head is one of its records.
                // Anything else was written by someone else — a database writer without the
                // checkpoint key — and chaining onto it would have the next checkpoint sign it.
                Err(StoreError::Conflict(_)) => {
                    let head = self
                        .runtime
                        .block_on(self.store.chain_head(&self.chain))
                        .map_err(|e| LogError::Write(e.to_string()))?;
                    match head {
                        Some(head) if self.unconfirmed.contains(&head) => {
                            self.head = head;
                            self.unconfirmed.clear();
                        }
                        found => {
                            tracing::error!(
                                chain = %self.chain,
                                ours = self.head.0,
                                found = ?found.map(|(seq, _)| seq),
                                "the access-log chain holds records this writer did not write; \
                                 refusing to continue it (restart the instance for a new chain, \
                                 and run `keyhole log verify`)"
                            );
                            self.status.broken.store(true, Ordering::Release);
                            return Err(LogError::Write(
                                "the chain holds records this writer did not write".into(),
                            ));
                        }
                    }
                    result = Err(LogError::Write("the chain moved under the writer".into()));
                }
                Err(e) => {
                    // Some or all of it may be in; the next conflict tells.
                    self.unconfirmed = chained.iter().map(|r| (r.seq, r.hash.clone())).collect();
                    return Err(LogError::Write(e.to_string()));
                }
            }
        }
        result
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::access_log::GENESIS_HASH;

    /// A journal-mode writer on a fresh chain `c1` in `journal`, as the tests drive it: its
    /// status, and the syncer's durable `seq` (the importer's side is left unconnected).
    pub fn journal_log(journal: Journal) -> (AccessLog, Arc<LogStatus>, watch::Receiver<i64>) {
        let status = Arc::new(LogStatus::at(0));
        let (_, imported) = watch::channel(None);
        let (durable_tx, durable) = watch::channel(0);
        let log = AccessLog::start_journal(
            journal,
            "c1",
            (0, GENESIS_HASH.to_owned()),
            status.clone(),
            imported,
            durable_tx,
            Arc::new(Metrics::default()),
        )
        .unwrap_or_else(|e| panic!("starting the test writer: {e}"));
        (log, status, durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{GENESIS_HASH, Outcome};
    use crate::store::testing;
    use chrono::Utc;

    fn record(n: usize) -> AccessRecord {
        AccessRecord {
            at: Utc::now(),
            request_id: format!("r{n}"),
            client_id: Some("fone-shop".into()),
            grant_id: Some("g-1".into()),
            customer_id: Some("CU-1001".into()),
            resource: "claims".into(),
            resource_id: Some(format!("C-{n}")),
            record_ids: vec![format!("C-{n}")],
            fields: vec!["claims:status".into()],
            outcome: Outcome::Ok,
            status: 200,
            client_ip: None,
        }
    }

    async fn append_round(log: &AccessLog, round: usize) -> Vec<i64> {
        let mut seqs = Vec::new();
        for chunk in 0..20 {
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..25 {
                let (log, record) = (log.clone(), record(round * 1000 + chunk * 25 + i));
                calls.spawn(async move { log.append(record).await });
            }
            while let Some(seq) = calls.join_next().await {
                seqs.push(seq.unwrap().unwrap());
            }
        }
        seqs
    }

    /// Regression: the checkpoint ran on another connection, never caught up with the writer,
    /// and the write-ahead log grew with every record (to 376 MB in one load run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_is_rewound_instead_of_growing_with_the_log() {
        let (store, dir) = testing::store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let log = AccessLog::start_database(
            store.dedicated(&url).await.unwrap(),
            "c1",
            (0, GENESIS_HASH.to_owned()),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let wal = dir.path().join("t.db-wal");

        append_round(&log, 1).await;
        let after_one = std::fs::metadata(&wal).unwrap().len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        append_round(&log, 2).await;
        let after_two = std::fs::metadata(&wal).unwrap().len();

        assert!(
            after_two < after_one * 3 / 2,
            "the log grew from {after_one} to {after_two} bytes"
        );
        assert_eq!(store.chain_head("c1").await.unwrap().unwrap().0, 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journal_appends_get_consecutive_places_and_are_on_disk_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 4096, 1).unwrap();
        let (log, status, durable) = super::testing::journal_log(journal);
        let mut seqs = append_round(&log, 1).await;
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
        assert_eq!(*durable.borrow(), 500);
        assert_eq!(status.import_lag(), 500);

        // Every answered record is a whole frame on disk, chained in order.
        let mut prev = GENESIS_HASH.to_owned();
        let mut count = 0;
        for (_, path) in journal::segments(dir.path()).unwrap() {
            for frame in journal::read_from(&path, 0).unwrap().frames {
                let r: ChainedRecord = serde_json::from_slice(&frame).unwrap();
                count += 1;
                assert_eq!(r.seq, count);
                assert_eq!(r.prev_hash, prev);
                prev = r.hash;
            }
        }
        assert_eq!(count, 500);
        log.flush().await;
    }

    /// Regression: the writer's threads held the queue, so they (and their database
    /// connections, and the journal's lock) outlived the app; on PostgreSQL every test app
    /// leaked connections until the server refused new ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_stops_the_writer_and_releases_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 4096, 1).unwrap();
        let (log, _, mut durable) = super::testing::journal_log(journal);
        let second = log.clone();
        assert_eq!(log.append(record(1)).await.unwrap(), 1);
        drop(log);
        assert_eq!(
            second.append(record(2)).await.unwrap(),
            2,
            "one handle is left"
        );
        drop(second);
        // The sync thread ends after the writer thread: its sender goes, the importer sees it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while durable.changed().await.is_ok() {}
        })
        .await
        .unwrap();
        assert!(
            Journal::open(dir.path(), 4096, 1).is_ok(),
            "the lock went with the writer"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_that_cannot_be_written_fails_every_call_after() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("j");
        // Tiny segments: the second batch must start a new file.
        let (journal, _) = Journal::open(&journal_dir, 1, 1).unwrap();
        let (log, status, _durable) = super::testing::journal_log(journal);
        assert_eq!(log.append(record(1)).await.unwrap(), 1);
        // The next segment's name is taken by a directory: the roll, so the write, fails (a
        // failure even root cannot write through, unlike a read-only directory).
        std::fs::create_dir(journal_dir.join("segment-00000000000000000002.journal")).unwrap();
        let failed = log.append(record(2)).await;
        assert!(matches!(failed, Err(LogError::Write(_))), "{failed:?}");
        assert!(status.broken.load(Ordering::Acquire));
        assert!(matches!(
            log.append(record(3)).await,
            Err(LogError::Write(_))
        ));
    }
    /// A database writer without the checkpoint key appends a well-chained forged record at
    /// the next place of a live chain. The writer must not adopt it as its head: the next
    /// checkpoint would sign it into the chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forged_record_at_the_next_place_is_never_adopted_as_the_head() {
        let (store, dir) = testing::store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let log = AccessLog::start_database(
            store.dedicated(&url).await.unwrap(),
            "c1",
            (0, GENESIS_HASH.to_owned()),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        assert_eq!(log.append(record(1)).await.unwrap(), 1);
        let (seq, hash) = store.chain_head("c1").await.unwrap().unwrap();
        let mut fake = record(666);
        fake.customer_id = Some("CU-framed".into());
        let forged = chain_records([fake.normalised()], "c1", seq, hash);
        let forged_hash = forged[0].hash.clone();
        store.insert_access_records(forged).await.unwrap();

        let answered = log.append(record(2)).await;
        assert!(matches!(answered, Err(LogError::Write(_))), "{answered:?}");
        // Nothing was chained onto the forged record, and the head the checkpointer signs is
        // still the writer's own.
        assert_eq!(
            store.chain_head("c1").await.unwrap().unwrap(),
            (2, forged_hash)
        );
        assert_eq!(log.head().borrow().as_ref().unwrap().0, 1);
    }

    /// The case the re-read is for: a batch committed although its answer was lost. The next
    /// batch continues after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_answer_was_lost_is_continued_from() {
        let (store, dir) = testing::store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut writer = DatabaseWriter {
            store: store.dedicated(&url).await.unwrap(),
            chain: "c1".into(),
            head: (0, GENESIS_HASH.to_owned()),
            metrics: Arc::new(Metrics::default()),
            published: watch::channel(None).0,
            status: Arc::new(LogStatus::at(0)),
            runtime: tokio::runtime::Handle::current(),
            checkpointed: Instant::now(),
            unconfirmed: Vec::new(),
        };
        let records = vec![record(1).normalised(), record(2).normalised()];
        // The batch the writer attempted, committed behind its back, then reported failed.
        let attempted = chain_records(records.clone(), "c1", 0, GENESIS_HASH.to_owned());
        writer.unconfirmed = attempted.iter().map(|r| (r.seq, r.hash.clone())).collect();
        store.insert_access_records(attempted).await.unwrap();
        let seq = tokio::task::block_in_place(|| writer.commit(vec![record(3).normalised()]));
        assert_eq!(seq.unwrap(), 3);
        assert_eq!(store.chain_head("c1").await.unwrap().unwrap().0, 3);
    }

    /// A record too large for a frame fails its batch, but wrote nothing: the journal is
    /// intact, and later calls must not all fail until a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_too_large_for_a_frame_does_not_break_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 1 << 20, 1).unwrap();
        let (log, status, _durable) = super::testing::journal_log(journal);
        let mut huge = record(1);
        huge.record_ids = vec!["C-1".repeat(200_000); 2];
        assert!(matches!(log.append(huge).await, Err(LogError::Write(_))));
        assert!(!status.broken.load(Ordering::Acquire));
        assert_eq!(log.append(record(2)).await.unwrap(), 1);
    }
}
