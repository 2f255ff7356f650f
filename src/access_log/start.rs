//! Starting the access log in the configured durability mode. In journal mode: lock and
//! recover the journal (cutting a torn tail), find where the chain continues, copy into the
//! database everything it does not hold yet — before the instance serves — and start the
//! writer threads and the importer.

use super::chain::GENESIS_HASH;
use super::import::Importer;
use super::journal::{self, Journal};
use super::record::ChainedRecord;
use super::writer::{AccessLog, ChainHead, LogStatus};
use crate::config::{AccessLogSettings, Durability};
use crate::metrics::Metrics;
use crate::store::Store;
use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

/// Runs the importer on a thread and runtime of its own, on the log's own connection: building
/// and binding thousands of rows per INSERT is CPU the HTTP workers should not pay for, and its
/// timers do not panic when the server's runtime shuts down first (queries then fail, and the
/// importer stops once the writer has). It first imports everything the journal holds (the
/// returned receiver says how that went), then follows the writer.
fn spawn_importer(
    store: Store,
    dir: std::path::PathBuf,
    chain: String,
    in_database: Option<ChainHead>,
    status: Arc<LogStatus>,
    published: watch::Sender<super::checkpoint::Head>,
    durable: watch::Receiver<i64>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<u64, super::import::ImportError>>> {
    let (done, caught_up) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("access-log-import".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = done.send(Err(super::import::ImportError::Journal(
                        super::journal::JournalError::Io {
                            path: dir,
                            source: e,
                        },
                    )));
                    return;
                }
            };
            runtime.block_on(async move {
                let imported = in_database.as_ref().map_or(0, |(seq, _)| *seq);
                let mut importer = Importer::new(store, &dir, &chain, imported, status, published)
                    .checking_against(in_database);
                let first = importer.catch_up().await;
                let ok = first.is_ok();
                let _ = done.send(first);
                if ok {
                    importer.run(durable).await;
                }
            });
        })
        .context("starting the access-log importer")?;
    Ok(caught_up)
}

/// Segments roll at this size: small enough that the importer's reads and the deletion of
/// imported segments stay cheap, large enough that rolling (a create and a directory sync) is
/// rare.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// Starts the writer (and, in journal mode, the importer, after a first full import). `store`
/// is a connection of the log's own.
pub async fn start(
    settings: &AccessLogSettings,
    store: Store,
    metrics: Arc<Metrics>,
) -> anyhow::Result<AccessLog> {
    match settings.durability {
        Durability::Database => {
            // No disk of its own to keep a chain id on: a chain per process.
            let chain = uuid::Uuid::now_v7().to_string();
            let log = AccessLog::start_database(store, &chain, (0, GENESIS_HASH.into()), metrics)
                .context("starting the access-log writer")?;
            tracing::info!(%chain, durability = "database", "access log started");
            Ok(log)
        }
        Durability::Journal => start_journal(settings, store, metrics).await,
    }
}

async fn start_journal(
    settings: &AccessLogSettings,
    store: Store,
    metrics: Arc<Metrics>,
) -> anyhow::Result<AccessLog> {
    let dir = &settings.journal_dir;
    journal::create_dir(dir)?;
    let chain = journal::chain_id(dir).context("reading the journal's chain id")?;
    let in_database = store
        .chain_head(&chain)
        .await
        .context("reading the chain's head from the database")?;
    let imported = in_database.as_ref().map_or(0, |(seq, _)| *seq);
    // An empty journal (everything imported, segments deleted) continues where the database's
    // copy of the chain ends.
    let (journal, recovered) = Journal::open(dir, SEGMENT_BYTES, u64::try_from(imported + 1)?)
        .with_context(|| format!("opening the access-log journal in {}", dir.display()))?;
    if let Some((path, offset, bytes)) = &recovered.torn {
        metrics.observe_journal_torn_tail(*bytes);
        tracing::warn!(
            segment = %path.display(),
            offset,
            bytes,
            "cut a torn tail off the access-log journal (a crash mid-write; those records were never answered)"
        );
    }
    let in_journal: Option<ChainHead> = match &recovered.last {
        Some((seq, payload)) => {
            let record: ChainedRecord = serde_json::from_slice(payload)
                .context("the journal's last record does not decode")?;
            if i64::try_from(*seq).ok() != Some(record.seq) || record.chain != chain {
                bail!(
                    "the journal's last record is {} of chain {}, where {seq} of {chain} was expected",
                    record.seq,
                    record.chain
                );
            }
            Some((record.seq, record.hash))
        }
        None => None,
    };
    let head = match (in_journal, in_database.clone()) {
        (Some(journal), Some(database)) if database.0 > journal.0 => bail!(
            "the database holds chain {chain} up to {}, the journal in {} only up to {}: the \
             journal directory is older than the database (restored from a backup?); \
             refusing to fork the chain",
            database.0,
            dir.display(),
            journal.0
        ),
        (Some(journal), _) => journal,
        (None, Some(database)) => database,
        (None, None) => (0, GENESIS_HASH.to_owned()),
    };
    let status = Arc::new(LogStatus::at(imported));
    status.durable.store(head.0, Ordering::Release);
    let (published, imported_head) = watch::channel(None);
    let (durable_tx, durable) = watch::channel(head.0);
    let caught_up = spawn_importer(
        store,
        dir.to_owned(),
        chain.clone(),
        in_database,
        status.clone(),
        published,
        durable,
    )?;
    let added = caught_up
        .await
        .context("the access-log importer stopped")?
        .context("importing the journal into the database")?;
    if added > 0 {
        tracing::info!(records = added, %chain, "imported the access-log journal's backlog");
    }
    let log = AccessLog::start_journal(
        journal,
        &chain,
        head,
        status,
        imported_head,
        durable_tx,
        metrics,
    )
    .context("starting the access-log writer")?;
    tracing::info!(%chain, journal = %dir.display(), durability = "journal", "access log started");
    Ok(log)
}
