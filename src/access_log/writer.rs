//! The group-commit writer. Calls enqueue a record and wait; one task takes everything queued,
//! chains it, writes it as one multi-row INSERT (one transaction, one fsync) and then wakes
//! every waiter. Under load batches grow, so the cost per call falls as the rate rises.

use super::chain::{GENESIS_HASH, chain_records};
use super::record::AccessRecord;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Head;

/// The most records one INSERT carries (14 parameters each stays far below every limit).
const MAX_BATCH: usize = 256;
/// Calls waiting beyond this many fail at once instead of queueing without bound.
const QUEUE: usize = 16 * 1024;
/// Another writer (another instance) took the ids we meant to use: reload the head and retry.
const CONFLICT_RETRIES: usize = 5;
/// How often the writer copies SQLite's write-ahead log back into the database. It does so on
/// its own connection between batches, so the checkpoint has caught up when the next batch
/// starts and SQLite rewinds the log to its beginning. A checkpoint on another connection
/// races the writer and never catches up: the log then grows without bound, and appending to
/// an ever larger file makes each fsync several times slower.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("the access log could not be written: {0}")]
    Write(String),
    #[error("the access log writer is not running")]
    Stopped,
    #[error("the access log queue is full")]
    Overloaded,
}

enum Message {
    Append(Box<AccessRecord>, oneshot::Sender<Result<i64, LogError>>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    head: watch::Receiver<Head>,
}

impl AccessLog {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (head_tx, head) = watch::channel(None);
        tokio::spawn(Writer::new(store, metrics, head_tx).run(rx));
        Self { tx, head }
    }

    /// The chain's head after each commit of this writer; the checkpointer follows it.
    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.clone()
    }

    /// Appends a record and returns its id once it is durable.
    pub async fn append(&self, record: AccessRecord) -> Result<i64, LogError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send(Message::Append(Box::new(record.normalised()), done))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => LogError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => LogError::Stopped,
            })?;
        wait.await.map_err(|_| LogError::Stopped)?
    }

    /// Waits until everything appended before this call is written (used on shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    /// The last committed (id, hash); `None` means "read it from the database".
    head: Option<(i64, String)>,
    published: watch::Sender<Head>,
}

impl Writer {
    fn new(store: Store, metrics: Arc<Metrics>, published: watch::Sender<Head>) -> Self {
        Self {
            store,
            metrics,
            head: None,
            published,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut flushes = Vec::new();
        let mut checkpointed = Instant::now();
        loop {
            // Idle, the writer still checkpoints now and then: the portal, token and admin
            // writes of other connections also go through the write-ahead log.
            let first = tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
                () = tokio::time::sleep(IDLE_CHECKPOINT_EVERY) => {
                    self.checkpoint(&mut checkpointed).await;
                    continue;
                }
            };
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Append(record, done) => batch.push((*record, done)),
                    Message::Flush(done) => flushes.push(done),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch)).await;
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            // After the waiters are answered: the records queued meanwhile make the next batch.
            if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint(&mut checkpointed).await;
            }
        }
    }

    async fn checkpoint(&self, checkpointed: &mut Instant) {
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
        *checkpointed = Instant::now();
    }

    async fn commit(&mut self, batch: Vec<(AccessRecord, oneshot::Sender<Result<i64, LogError>>)>) {
        let started = Instant::now();
        let (records, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let mut result = Err(LogError::Write("not attempted".into()));
        for _ in 0..CONFLICT_RETRIES {
            result = self.try_commit(&records).await;
            match &result {
                Err(LogError::Write(reason)) if reason.starts_with("conflict") => continue,
                _ => break,
            }
        }
        self.metrics
            .observe_log_batch(records.len(), started.elapsed(), result.is_ok());
        match result {
            Ok(first_id) => {
                for (offset, done) in waiters.into_iter().enumerate() {
                    let _ = done.send(Ok(first_id + offset as i64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), "access log batch failed");
                for done in waiters {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    async fn try_commit(&mut self, records: &[AccessRecord]) -> Result<i64, LogError> {
        if self.store.serialises_log_writers() {
            let (first_id, head) = self
                .store
                .append_access_records_locked(records)
                .await
                .map_err(|e| match e {
                    // A writer without the lock (an older instance during a rolling upgrade).
                    StoreError::Conflict(_) => LogError::Write("conflict".into()),
                    e => LogError::Write(e.to_string()),
                })?;
            self.published.send_replace(Some(head));
            return Ok(first_id);
        }
        let (id, prev) = match self.head.take() {
            Some(head) => head,
            None => self
                .store
                .access_log_head()
                .await
                .map_err(|e| LogError::Write(e.to_string()))?
                .unwrap_or((0, GENESIS_HASH.to_owned())),
        };
        let first_id = id + 1;
        let chained = chain_records(records, id, prev);
        let Some((id, prev)) = chained.last().map(|r| (r.id, r.hash.clone())) else {
            return Ok(first_id);
        };
        match self.store.insert_access_records(chained).await {
            Ok(()) => {
                self.published.send_replace(Some((id, prev.clone())));
                self.head = Some((id, prev));
                Ok(first_id)
            }
            // Left as None: the next attempt re-reads the head, which another writer moved.
            Err(StoreError::Conflict(_)) => Err(LogError::Write("conflict".into())),
            Err(e) => Err(LogError::Write(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::Outcome;
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

    async fn append_round(log: &AccessLog, round: usize) {
        for chunk in 0..20 {
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..25 {
                let (log, record) = (log.clone(), record(round * 1000 + chunk * 25 + i));
                calls.spawn(async move { log.append(record).await });
            }
            while let Some(id) = calls.join_next().await {
                id.unwrap().unwrap();
            }
        }
    }

    /// Regression: the checkpoint ran on another connection, never caught up with the writer,
    /// and the write-ahead log grew with every record (to 376 MB in one load run).
    #[tokio::test]
    async fn the_write_ahead_log_is_rewound_instead_of_growing_with_the_log() {
        let (store, dir) = testing::store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let log = AccessLog::start(
            store.dedicated(&url).await.unwrap(),
            Arc::new(Metrics::default()),
        );
        let wal = dir.path().join("t.db-wal");

        append_round(&log, 1).await;
        let after_one = std::fs::metadata(&wal).unwrap().len();
        // Past the idle checkpoint, which runs however busy the machine is (a shorter pause
        // failed on a loaded CI machine, where the in-between checkpoints can lag).
        tokio::time::sleep(IDLE_CHECKPOINT_EVERY + Duration::from_millis(500)).await;
        append_round(&log, 2).await;
        let after_two = std::fs::metadata(&wal).unwrap().len();

        assert!(
            after_two < after_one * 3 / 2,
            "the log grew from {after_one} to {after_two} bytes"
        );
        assert_eq!(store.access_log_head().await.unwrap().unwrap().0, 1000);
    }
}
