//! Persistent storage through sea-orm. Entity models never leave this module: callers get the
//! records below, whose fields are already parsed domain types.

mod access_log;
mod admin;
mod alerts;
mod checkpoints;
mod console_users;
mod customers;
mod grants;
mod keys;
mod partners;
mod refresh;
mod revoked;
mod rollup_tally;
mod rollups;

pub use access_log::{CheckedRecord, GrantUsage};
pub use admin::{AdminAuditEntry, AdminToken};
pub use alerts::{PerPartner, READ_OUTCOMES};
pub use checkpoints::StoredCheckpoint;
pub use console_users::{ConsoleUser, NO_PASSWORD, OidcIdentity};
pub use customers::Customer;
pub use grants::{Grant, GrantFilter, GrantState, GrantStatusFilter, RevokedBy};
pub use keys::{KeyReplacement, StoredKey};
pub use partners::{
    FapiRequirements, NewPartner, Partner, PartnerKeys, PartnerRates, PartnerStatus,
};
pub use refresh::{
    IssuedFor, NewRefreshToken, RefreshOutcome, RefreshRecord, Rotation, SealedAnswer, Successor,
};
pub use rollups::{
    Bucket, MAX_BUCKETS, Ranked, RollupsPruned, Series, SeriesName, TimeSeries, refusal_outcomes,
};

use crate::files::{self, FileError};
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} was changed by another process meanwhile; try again")]
    Changed(String),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Where a `sqlite:` database URL keeps its data, read as sqlx reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// In memory: nothing on disk.
    Memory,
    /// A file; `create` when the URL lets it be created (`mode=rwc`).
    File { path: PathBuf, create: bool },
}

/// The location of a SQLite database URL; `None` for any other database.
pub fn sqlite_location(url: &str) -> Option<SqliteLocation> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let mut create = false;
    for (key, value) in url::form_urlencoded::parse(params.as_bytes()) {
        if key == "mode" {
            match value.as_ref() {
                "memory" => return Some(SqliteLocation::Memory),
                "rwc" => create = true,
                _ => {}
            }
        }
    }
    // An empty name is SQLite's private temporary database.
    if database.is_empty() || database == ":memory:" {
        return Some(SqliteLocation::Memory);
    }
    let decoded = percent_encoding::percent_decode_str(database).decode_utf8_lossy();
    Some(SqliteLocation::File {
        path: PathBuf::from(decoded.as_ref()),
        create,
    })
}

impl StoreError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if let Some(SqliteLocation::File { path, create: true }) = sqlite_location(url) {
            // SQLite creates its file 0644 less the umask, and the -wal and -shm files take the
            // database file's mode: an empty owner-only file first (a valid empty database)
            // closes all three to other users.
            match files::create_owner_only(&path, b"") {
                Ok(()) => {}
                Err(FileError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let pool = if url.starts_with("sqlite:") { 4 } else { 16 };
        let store = Self::open(url, pool).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store on a single connection of its own, for the access-log writer: its page cache
    /// stays warm (SQLite drops a connection's cache whenever another connection wrote), and
    /// the writer never waits for a pooled connection behind other queries.
    pub async fn dedicated(&self, url: &str) -> Result<Self, StoreError> {
        Self::open(url, 1).await
    }

    async fn open(url: &str, pool: u32) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(pool)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false)
            // On every pooled connection: WAL so readers never wait for the log writer, FULL
            // so each commit (one per access-log batch) is on disk before it returns.
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // No checkpoint inside a commit (that stalled calls for hundreds of ms);
                    // the access-log writer checkpoints between its batches instead.
                    .pragma("wal_autocheckpoint", "0")
            });
        Ok(Self {
            db: Database::connect(options).await?,
        })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Copies the SQLite write-ahead log into the database without blocking writers; a no-op
    /// elsewhere. The access-log writer calls it on its own connection between batches.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            self.db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// Distinguishes a unique-key violation from other failures on insert.
fn map_insert_error(err: DbErr, what: &str) -> StoreError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Db(err),
    }
}

#[cfg(test)]
mod tests {
    use super::{SqliteLocation, sqlite_location};
    use std::path::PathBuf;

    #[test]
    fn sqlite_urls_name_their_file_as_sqlx_reads_them() {
        let file = |path: &str, create| {
            Some(SqliteLocation::File {
                path: PathBuf::from(path),
                create,
            })
        };
        assert_eq!(
            sqlite_location("sqlite://keyhole.db?mode=rwc"),
            file("keyhole.db", true)
        );
        assert_eq!(
            sqlite_location("sqlite:///var/lib/k.db"),
            file("/var/lib/k.db", false)
        );
        assert_eq!(
            sqlite_location("sqlite:k%3F.db?mode=rw"),
            file("k?.db", false)
        );
        for memory in [
            "sqlite::memory:",
            "sqlite://?mode=memory",
            "sqlite://k.db?mode=memory",
        ] {
            assert_eq!(
                sqlite_location(memory),
                Some(SqliteLocation::Memory),
                "{memory}"
            );
        }
        assert_eq!(sqlite_location("postgres://db/keyhole"), None);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A fresh SQLite database in a temporary directory (in-memory SQLite would give each pooled
    /// connection its own database).
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    /// A fresh database on the PostgreSQL server `KEYHOLE_DATABASE_URL` names (as `.ci/run`
    /// sets it), SQLite as [`store`] otherwise: for queries whose SQL differs per backend.
    pub async fn any_store() -> (Store, tempfile::TempDir) {
        use sea_orm::ConnectionTrait;
        let url = match std::env::var("KEYHOLE_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => url,
            _ => return store().await,
        };
        let admin = sea_orm::Database::connect(url.clone()).await.unwrap();
        let name = format!("kh_unit_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut scratch = url::Url::parse(&url).unwrap();
        scratch.set_path(&format!("/{name}"));
        (
            Store::connect(scratch.as_str()).await.unwrap(),
            tempfile::tempdir().unwrap(),
        )
    }
}
