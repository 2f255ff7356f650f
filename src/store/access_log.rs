use super::{Store, StoreError};
use crate::access_log::{
    AccessRecord, ChainedRecord, GENESIS_HASH, LogFilter, Outcome, chain_records,
};
use chrono::{DateTime, SubsecRound, Utc};
use entity::access_log;
use sea_orm::sea_query::LikeExpr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Select, SqlErr,
};

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

impl TryFrom<access_log::Model> for ChainedRecord {
    type Error = StoreError;

    fn try_from(m: access_log::Model) -> Result<Self, StoreError> {
        Ok(ChainedRecord {
            id: m.id,
            record: AccessRecord {
                at: m.at,
                request_id: m.request_id,
                client_id: m.client_id,
                grant_id: m.grant_id,
                customer_id: m.customer_id,
                resource: m.resource,
                resource_id: m.resource_id,
                record_ids: serde_json::from_str(&m.record_ids).map_err(StoreError::corrupt)?,
                fields: serde_json::from_str(&m.fields).map_err(StoreError::corrupt)?,
                outcome: Outcome::parse(&m.outcome)
                    .ok_or_else(|| StoreError::corrupt(format!("outcome `{}`", m.outcome)))?,
                status: u16::try_from(m.status).map_err(StoreError::corrupt)?,
                client_ip: m.client_ip,
            },
            prev_hash: m.prev_hash,
            hash: m.hash,
        })
    }
}

/// A stored row as verification sees it: its id, and its record — or why the row is not
/// exactly what the writer wrote.
pub type CheckedRecord = (i64, Result<ChainedRecord, String>);

/// A row with the text SQLite holds for `at`, decoded column by column so that one bad value
/// spoils its row only.
struct StoredRow {
    id: i64,
    model: Result<access_log::Model, DbErr>,
    at_text: Option<String>,
}

impl FromQueryResult for StoredRow {
    fn from_query_result(row: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get(pre, "id")?,
            model: access_log::Model::from_query_result(row, pre),
            at_text: row.try_get::<Option<String>>(pre, "at_text").ok().flatten(),
        })
    }
}

impl StoredRow {
    /// The hash covers parsed values, so text re-encoded to the same values (a JSON escape, a
    /// timestamp in another offset) keeps the hash, yet hides the row from searches that
    /// compare the stored text. Every such column must hold exactly what the writer wrote.
    fn checked(self, sqlite: bool) -> Result<ChainedRecord, String> {
        let model = self
            .model
            .map_err(|e| format!("the stored row does not decode: {e}"))?;
        let (stored_ids, stored_fields) = (model.record_ids.clone(), model.fields.clone());
        let row = ChainedRecord::try_from(model).map_err(|e| e.to_string())?;
        // The text is whatever an intruder wrote: only its start goes into the report.
        let not_as_written = |column: &str, text: &str| {
            let start: String = text.chars().take(80).collect();
            format!("`{column}` is not stored as the writer wrote it: `{start}`")
        };
        if to_json(&row.record.record_ids) != stored_ids {
            return Err(not_as_written("record_ids", &stored_ids));
        }
        if to_json(&row.record.fields) != stored_fields {
            return Err(not_as_written("fields", &stored_fields));
        }
        // PostgreSQL keeps the instant itself; SQLite keeps the text sqlx wrote for it
        // (`to_rfc3339_opts(AutoSi, false)`: every verification on SQLite checks that this
        // is still so, since records written by the gateway must pass).
        let at = &row.record.at;
        let at_text = self.at_text.unwrap_or_default();
        if at.trunc_subsecs(6) != *at
            || (sqlite && at_text != at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        {
            return Err(not_as_written("at", &at_text));
        }
        Ok(row)
    }
}

impl Store {
    /// Records with ids above `after` and at most `through`, oldest first, each checked to be
    /// stored exactly as written: what verification and export walk.
    pub async fn access_log_checked_between(
        &self,
        after: i64,
        through: i64,
        limit: u64,
    ) -> Result<Vec<CheckedRecord>, StoreError> {
        use sea_orm::sea_query::Expr;
        let sqlite = self.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite;
        Ok(access_log::Entity::find()
            .column_as(Expr::cust("CAST(at AS TEXT)"), "at_text")
            .filter(access_log::Column::Id.gt(after))
            .filter(access_log::Column::Id.lte(through))
            .order_by_asc(access_log::Column::Id)
            .limit(limit)
            .into_model::<StoredRow>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.checked(sqlite)))
            .collect())
    }

    /// The newest record's id and hash: where the chain continues.
    pub async fn access_log_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(access_log::Entity::find()
            .order_by_desc(access_log::Column::Id)
            .limit(1)
            .one(&self.db)
            .await?
            .map(|m| (m.id, m.hash)))
    }

    /// One multi-row INSERT: atomic on its own, so the batch is one transaction and one fsync.
    /// A duplicate id means another writer extended the chain first.
    pub async fn insert_access_records(&self, rows: Vec<ChainedRecord>) -> Result<(), StoreError> {
        insert_chained(&self.db, rows).await
    }

    /// Whether several instances' writers must take turns through a database lock.
    pub fn serialises_log_writers(&self) -> bool {
        self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres
    }

    /// PostgreSQL, where several instances write one chain: in one transaction, take the log's
    /// advisory lock, read the head, chain `records` onto it and insert them. Writers take
    /// turns instead of racing for ids, so none is ever refused for losing a race. Returns the
    /// first id and the new head.
    pub async fn append_access_records_locked(
        &self,
        records: &[AccessRecord],
    ) -> Result<(i64, (i64, String)), StoreError> {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        // READ COMMITTED whatever the database's default, so the head read after the lock sees
        // the previous holder's commit; bounded waits, so a stalled holder turns into 503s
        // instead of calls that hang.
        let txn = self
            .db
            .begin_with_config(Some(sea_orm::IsolationLevel::ReadCommitted), None)
            .await?;
        txn.execute_unprepared("SET LOCAL lock_timeout = '5s'")
            .await?;
        txn.execute_unprepared("SET LOCAL statement_timeout = '10s'")
            .await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOG_WRITER_LOCK})"))
            .await?;
        let (head_id, head_hash) = access_log::Entity::find()
            .order_by_desc(access_log::Column::Id)
            .limit(1)
            .one(&txn)
            .await?
            .map_or((0, GENESIS_HASH.to_owned()), |m| (m.id, m.hash));
        let chained = chain_records(records, head_id, head_hash);
        let head = chained
            .last()
            .map(|r| (r.id, r.hash.clone()))
            .ok_or_else(|| StoreError::corrupt("an empty access-log batch"))?;
        insert_chained(&txn, chained).await?;
        txn.commit().await?;
        Ok((head_id + 1, head))
    }

    /// The oldest record still held (older ones may have been pruned).
    pub async fn access_log_first(&self) -> Result<Option<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .order_by_asc(access_log::Column::Id)
            .limit(1)
            .one(&self.db)
            .await?
            .map(ChainedRecord::try_from)
            .transpose()
    }

    /// Records with ids above `after` and at most `through`, oldest first.
    pub async fn access_log_between(
        &self,
        after: i64,
        through: i64,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .filter(access_log::Column::Id.gt(after))
            .filter(access_log::Column::Id.lte(through))
            .order_by_asc(access_log::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ChainedRecord::try_from)
            .collect()
    }

    /// The smallest id of a record at or after `at`, and the largest before it: the id range
    /// of a time range. Ids follow commit order and `at` the call's start, so they are nearly,
    /// not strictly, in step; min and max keep every record of the range inside.
    pub async fn access_log_id_bounds(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        use sea_orm::sea_query::{Expr, Func};
        let mut query = access_log::Entity::find().select_only();
        if let Some(from) = from {
            query = query.filter(access_log::Column::At.gte(from));
        }
        if let Some(to) = to {
            query = query.filter(access_log::Column::At.lt(to));
        }
        let bounds: Option<(Option<i64>, Option<i64>)> = query
            .column_as(
                Expr::from(Func::min(Expr::col(access_log::Column::Id))),
                "lo",
            )
            .column_as(
                Expr::from(Func::max(Expr::col(access_log::Column::Id))),
                "hi",
            )
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(match bounds {
            Some((Some(lo), Some(hi))) => Some((lo, hi)),
            _ => None,
        })
    }

    /// One page of a search, newest first, below `before` (an id) when given.
    pub async fn search_access_log(
        &self,
        filter: &LogFilter,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        self.newest_first(filtered(filter), before, limit).await
    }

    /// A page of `query`'s records, newest first, below `before` (an id) when given.
    async fn newest_first(
        &self,
        mut query: Select<access_log::Entity>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        if let Some(before) = before {
            query = query.filter(access_log::Column::Id.lt(before));
        }
        query
            .order_by_desc(access_log::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ChainedRecord::try_from)
            .collect()
    }

    /// Removes every record up to and including `through`; one statement, so one transaction.
    pub async fn delete_access_log_through(&self, through: i64) -> Result<u64, StoreError> {
        let result = access_log::Entity::delete_many()
            .filter(access_log::Column::Id.lte(through))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Records with ids above `after`, oldest first.
    pub async fn access_log_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        self.access_log_between(after, i64::MAX, limit).await
    }
}

/// The advisory-lock key of the access-log writers (any constant; "kh-log" in ASCII).
const LOG_WRITER_LOCK: i64 = 0x6b68_2d6c_6f67;

async fn insert_chained(
    db: &impl sea_orm::ConnectionTrait,
    rows: Vec<ChainedRecord>,
) -> Result<(), StoreError> {
    let models = rows.into_iter().map(|row| access_log::ActiveModel {
        id: Set(row.id),
        at: Set(row.record.at),
        request_id: Set(row.record.request_id),
        client_id: Set(row.record.client_id),
        grant_id: Set(row.record.grant_id),
        customer_id: Set(row.record.customer_id),
        resource: Set(row.record.resource),
        resource_id: Set(row.record.resource_id),
        record_ids: Set(to_json(&row.record.record_ids)),
        fields: Set(to_json(&row.record.fields)),
        outcome: Set(row.record.outcome.as_str().to_owned()),
        status: Set(i32::from(row.record.status)),
        client_ip: Set(row.record.client_ip),
        prev_hash: Set(row.prev_hash),
        hash: Set(row.hash),
    });
    access_log::Entity::insert_many(models)
        .exec_without_returning(db)
        .await
        .map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::Conflict("access log id".into())
            }
            _ => StoreError::Db(e),
        })?;
    Ok(())
}

/// The filters as SQL. Fields are stored as a JSON array of scopes, so a field matches the
/// quoted scope inside it; `_` is a LIKE wildcard and is escaped.
fn filtered(filter: &LogFilter) -> Select<access_log::Entity> {
    let mut query = access_log::Entity::find();
    if let Some(client) = &filter.client_id {
        query = query.filter(access_log::Column::ClientId.eq(client.as_str()));
    }
    if let Some(customer) = &filter.customer_id {
        query = query.filter(access_log::Column::CustomerId.eq(customer.as_str()));
    }
    if let Some(grant) = &filter.grant_id {
        query = query.filter(access_log::Column::GrantId.eq(grant.to_string()));
    }
    if let Some(resource) = &filter.resource {
        query = query.filter(access_log::Column::Resource.eq(resource.as_str()));
    }
    if let Some(field) = &filter.field {
        let pattern = format!("%\"{}\"%", field.to_string().replace('_', "\\_"));
        query = query.filter(access_log::Column::Fields.like(LikeExpr::new(pattern).escape('\\')));
    }
    if let Some(outcome) = filter.outcome {
        query = query.filter(access_log::Column::Outcome.eq(outcome.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(access_log::Column::At.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(access_log::Column::At.lt(to));
    }
    query
}

/// How often and when a grant was last used to read data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantUsage {
    pub reads: u64,
    pub last_read: Option<chrono::DateTime<chrono::Utc>>,
}

/// Outcomes that disclosed (or confirmed) data: what a customer calls "a read".
const READS: [&str; 2] = ["ok", "not_modified"];

impl Store {
    /// Reads per grant, computed from the log rather than kept as a counter on the hot path.
    pub async fn grant_usage(
        &self,
        grant_ids: &[String],
    ) -> Result<std::collections::HashMap<String, GrantUsage>, StoreError> {
        use sea_orm::sea_query::{Expr, Func};
        if grant_ids.is_empty() {
            return Ok(Default::default());
        }
        let rows: Vec<(Option<String>, i64, Option<chrono::DateTime<chrono::Utc>>)> =
            access_log::Entity::find()
                .select_only()
                .column(access_log::Column::GrantId)
                .column_as(
                    Expr::from(Func::count(Expr::col(access_log::Column::Id))),
                    "reads",
                )
                .column_as(
                    Expr::from(Func::max(Expr::col(access_log::Column::At))),
                    "last_read",
                )
                .filter(access_log::Column::GrantId.is_in(grant_ids.iter().cloned()))
                .filter(access_log::Column::Outcome.is_in(READS))
                .group_by(access_log::Column::GrantId)
                .into_tuple()
                .all(&self.db)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(grant, reads, last_read)| {
                Some((
                    grant?,
                    GrantUsage {
                        reads: u64::try_from(reads).unwrap_or(0),
                        last_read,
                    },
                ))
            })
            .collect())
    }

    /// The records of some grants, newest first, below `before` (an id) when given.
    pub async fn access_log_of_grants(
        &self,
        grant_ids: &[String],
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        if grant_ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = access_log::Entity::find()
            .filter(access_log::Column::GrantId.is_in(grant_ids.iter().cloned()));
        self.newest_first(query, before, limit).await
    }
}
