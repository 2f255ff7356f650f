use super::rollup_tally::Tally;
use super::{Store, StoreError};
use crate::access_log::{AccessRecord, ChainedRecord, LogFilter, Outcome};
use chrono::{DateTime, SubsecRound, Utc};
use entity::access_log;
use sea_orm::sea_query::LikeExpr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Select, SqlErr, TransactionTrait,
};
use std::collections::HashMap;

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

impl TryFrom<access_log::Model> for ChainedRecord {
    type Error = StoreError;

    fn try_from(m: access_log::Model) -> Result<Self, StoreError> {
        Ok(ChainedRecord {
            id: m.id,
            chain: m.chain,
            seq: m.seq,
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

/// A stored row as verification sees it: its id and place, and its record — or why the row
/// is not exactly what the writer wrote.
pub struct CheckedRecord {
    pub id: i64,
    pub seq: i64,
    pub record: Result<ChainedRecord, String>,
}

/// A row with the text SQLite holds for `at`, decoded column by column so that one bad value
/// spoils its row only.
struct StoredRow {
    id: i64,
    seq: i64,
    model: Result<access_log::Model, DbErr>,
    at_text: Option<String>,
}

impl FromQueryResult for StoredRow {
    fn from_query_result(row: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get(pre, "id")?,
            seq: row.try_get(pre, "seq")?,
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
    /// Records of `chain` with `seq` above `after` and at most `through`, in chain order,
    /// each checked to be stored exactly as written: what verification and export walk.
    pub async fn access_log_checked_between(
        &self,
        chain: &str,
        after: i64,
        through: i64,
        limit: u64,
    ) -> Result<Vec<CheckedRecord>, StoreError> {
        use sea_orm::sea_query::Expr;
        let sqlite = self.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite;
        Ok(access_log::Entity::find()
            .column_as(Expr::cust("CAST(at AS TEXT)"), "at_text")
            .filter(access_log::Column::Chain.eq(chain))
            .filter(access_log::Column::Seq.gt(after))
            .filter(access_log::Column::Seq.lte(through))
            .order_by_asc(access_log::Column::Seq)
            .limit(limit)
            .into_model::<StoredRow>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| CheckedRecord {
                id: row.id,
                seq: row.seq,
                record: row.checked(sqlite),
            })
            .collect())
    }

    /// The chains the database holds records of, in name order.
    pub async fn access_log_chains(&self) -> Result<Vec<String>, StoreError> {
        Ok(access_log::Entity::find()
            .select_only()
            .column(access_log::Column::Chain)
            .distinct()
            .order_by_asc(access_log::Column::Chain)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The newest record of `chain`: its `seq` and hash, where the chain continues.
    pub async fn chain_head(&self, chain: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(access_log::Entity::find()
            .filter(access_log::Column::Chain.eq(chain))
            .order_by_desc(access_log::Column::Seq)
            .limit(1)
            .one(&self.db)
            .await?
            .map(|m| (m.seq, m.hash)))
    }

    /// The newest record of any chain (the largest row id), for tests and the demo.
    pub async fn access_log_newest(&self) -> Result<Option<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .order_by_desc(access_log::Column::Id)
            .limit(1)
            .one(&self.db)
            .await?
            .map(ChainedRecord::try_from)
            .transpose()
    }

    /// One multi-row INSERT and the console's running totals of its records, in one
    /// transaction (so one fsync). A record already at its `(chain, seq)` is a conflict: the
    /// writer that committed `durability = "database"` records owns its chain, so that means a
    /// second writer.
    pub async fn insert_access_records(&self, rows: Vec<ChainedRecord>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let tally = Tally::of(rows.iter().map(|r| &r.record));
        let txn = self.db.begin().await?;
        access_log::Entity::insert_many(rows.into_iter().map(active))
            .exec_without_returning(&txn)
            .await
            .map_err(|e| match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => {
                    StoreError::Conflict("access log (chain, seq)".into())
                }
                _ => StoreError::Db(e),
            })?;
        tally.apply(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Copies journal records of one chain in, skipping records already there, so a batch
    /// imported twice leaves one copy and is counted once in the running totals. A record
    /// already there must be the same record (same hash): anything else means two writers
    /// used one chain, and the whole batch is refused. Returns how many rows were added.
    pub async fn import_access_records(&self, rows: &[ChainedRecord]) -> Result<u64, StoreError> {
        let Some(first) = rows.first() else {
            return Ok(0);
        };
        let chain = first.chain.as_str();
        let (lo, hi) = rows.iter().fold((first.seq, first.seq), |(lo, hi), r| {
            (lo.min(r.seq), hi.max(r.seq))
        });
        let txn = self.db.begin().await?;
        // The importer is its chain's only writer, so what is stored now stays so until the
        // commit: the records not found here are exactly the ones the INSERT adds.
        let stored: HashMap<i64, String> = access_log::Entity::find()
            .select_only()
            .column(access_log::Column::Seq)
            .column(access_log::Column::Hash)
            .filter(access_log::Column::Chain.eq(chain))
            .filter(access_log::Column::Seq.between(lo, hi))
            .into_tuple::<(i64, String)>()
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        if let Some(row) = rows
            .iter()
            .find(|r| stored.get(&r.seq).is_some_and(|h| *h != r.hash))
        {
            return Err(StoreError::Conflict(format!(
                "chain {} already holds another record {}",
                row.chain, row.seq
            )));
        }
        // A place given twice in one batch is added once, as the first record has it.
        let mut seen = std::collections::HashSet::new();
        let new: Vec<&ChainedRecord> = rows
            .iter()
            .filter(|r| !stored.contains_key(&r.seq) && seen.insert(r.seq))
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let tally = Tally::of(new.iter().map(|r| &r.record));
        let inserted = match access_log::Entity::insert_many(new.into_iter().cloned().map(active))
            .on_conflict_do_nothing_on([access_log::Column::Chain, access_log::Column::Seq])
            .exec_without_returning(&txn)
            .await?
        {
            sea_orm::TryInsertResult::Inserted(n) => n,
            _ => 0,
        };
        tally.apply(&txn).await?;
        txn.commit().await?;
        Ok(inserted)
    }

    /// The oldest record of `chain` still held (older ones may have been pruned).
    pub async fn access_log_first(&self, chain: &str) -> Result<Option<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .filter(access_log::Column::Chain.eq(chain))
            .order_by_asc(access_log::Column::Seq)
            .limit(1)
            .one(&self.db)
            .await?
            .map(ChainedRecord::try_from)
            .transpose()
    }

    /// Records of `chain` with `seq` above `after` and at most `through`, in chain order.
    pub async fn access_log_between(
        &self,
        chain: &str,
        after: i64,
        through: i64,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .filter(access_log::Column::Chain.eq(chain))
            .filter(access_log::Column::Seq.gt(after))
            .filter(access_log::Column::Seq.lte(through))
            .order_by_asc(access_log::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ChainedRecord::try_from)
            .collect()
    }

    /// The smallest row id of a record at or after `from`, and the largest before `to`, over
    /// every chain: the id range of a time range. Ids follow import order and `at` the call's
    /// start, so they are nearly, not strictly, in step; min and max keep every record of the
    /// range inside.
    pub async fn access_log_id_bounds(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.bounds(access_log::Column::Id, None, from, to).await
    }

    /// The smallest `seq` of a record of `chain` at or after `from`, and the largest before
    /// `to`: the part of the chain a time range covers. A chain's order is its writer's commit
    /// order and `at` the call's start, so they are nearly, not strictly, in step; min and max
    /// keep every record of the range inside.
    pub async fn access_log_seq_bounds(
        &self,
        chain: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.bounds(access_log::Column::Seq, Some(chain), from, to)
            .await
    }

    async fn bounds(
        &self,
        column: access_log::Column,
        chain: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        use sea_orm::sea_query::{Expr, Func};
        let mut query = access_log::Entity::find().select_only();
        if let Some(chain) = chain {
            query = query.filter(access_log::Column::Chain.eq(chain));
        }
        if let Some(from) = from {
            query = query.filter(access_log::Column::At.gte(from));
        }
        if let Some(to) = to {
            query = query.filter(access_log::Column::At.lt(to));
        }
        let bounds: Option<(Option<i64>, Option<i64>)> = query
            .column_as(Expr::from(Func::min(Expr::col(column))), "lo")
            .column_as(Expr::from(Func::max(Expr::col(column))), "hi")
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

    /// One record by its row id.
    pub async fn access_log_record(&self, id: i64) -> Result<Option<ChainedRecord>, StoreError> {
        access_log::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(ChainedRecord::try_from)
            .transpose()
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

    /// Removes every record of `chain` up to and including `through`; one statement, so one
    /// transaction.
    pub async fn delete_access_log_through(
        &self,
        chain: &str,
        through: i64,
    ) -> Result<u64, StoreError> {
        let result = access_log::Entity::delete_many()
            .filter(access_log::Column::Chain.eq(chain))
            .filter(access_log::Column::Seq.lte(through))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Records of every chain with row ids above `after`, in import order: what tests and the
    /// demo read back.
    pub async fn access_log_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<ChainedRecord>, StoreError> {
        access_log::Entity::find()
            .filter(access_log::Column::Id.gt(after))
            .order_by_asc(access_log::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ChainedRecord::try_from)
            .collect()
    }
}

/// A row as the database receives it; its id is the database's to assign.
fn active(row: ChainedRecord) -> access_log::ActiveModel {
    access_log::ActiveModel {
        id: sea_orm::ActiveValue::NotSet,
        chain: Set(row.chain),
        seq: Set(row.seq),
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
    }
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
