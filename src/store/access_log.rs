use super::{Store, StoreError};
use crate::access_log::{AccessRecord, ChainedRecord, Outcome};
use entity::access_log;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
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

impl Store {
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
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => {
                    StoreError::Conflict("access log id".into())
                }
                _ => StoreError::Db(e),
            })?;
        Ok(())
    }

    /// Records with ids above `after`, oldest first.
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
        let mut query = access_log::Entity::find()
            .filter(access_log::Column::GrantId.is_in(grant_ids.iter().cloned()));
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
}
