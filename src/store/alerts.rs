//! The aggregates behind the anomaly report, computed by the database from the access log
//! (the recent window) and from its hourly totals (the weeks-long baseline), so nothing is
//! counted on the partner hot path.

use super::{Store, StoreError};
use crate::access_log::Outcome;
use chrono::{DateTime, Utc};
use entity::access_log;
use entity::access_log_hourly as hourly;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect};
use std::collections::HashMap;

/// Per partner (`None`: calls whose token named no partner), one number.
pub type PerPartner = HashMap<Option<String>, u64>;

/// Outcomes that disclosed or confirmed data.
pub const READ_OUTCOMES: [Outcome; 2] = [Outcome::Ok, Outcome::NotModified];

fn strs(outcomes: &[Outcome]) -> Vec<&'static str> {
    outcomes.iter().map(|o| o.as_str()).collect()
}

/// A window of the log as an id range as well as a time range, so each aggregate scans only
/// that range: without it, SQLite's planner (which has no statistics on `at`) walks a whole
/// partner index to save a sort — 17 s instead of 7 ms at 10 million records. The id range is
/// exact (the smallest and largest id with `at` in the window, from the covering `at` index:
/// 0.13 s for four weeks of a 10-million-record log).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: DateTime<Utc>,
    /// Exclusive; `None`: open-ended, so a record stamped by an instance whose clock runs a
    /// little ahead still counts.
    pub until: Option<DateTime<Utc>>,
    first: i64,
    last: i64,
}

impl Store {
    /// `[since, until)`; `None` when it holds no record.
    pub async fn log_window(
        &self,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<Window>, StoreError> {
        Ok(self
            .access_log_id_bounds(Some(since), until)
            .await?
            .map(|(first, last)| Window {
                since,
                until,
                first,
                last,
            }))
    }

    fn in_window(w: &Window) -> sea_orm::Select<access_log::Entity> {
        let query = access_log::Entity::find()
            .filter(access_log::Column::Id.gte(w.first))
            .filter(access_log::Column::Id.lte(w.last))
            .filter(access_log::Column::At.gte(w.since));
        match w.until {
            Some(until) => query.filter(access_log::Column::At.lt(until)),
            None => query,
        }
    }

    /// One number per partner: `count` over the window's records that pass `query`.
    async fn per_partner(
        &self,
        query: sea_orm::Select<access_log::Entity>,
        count: sea_orm::sea_query::FunctionCall,
    ) -> Result<PerPartner, StoreError> {
        let rows: Vec<(Option<String>, i64)> = query
            .select_only()
            .column(access_log::Column::ClientId)
            .column_as(Expr::from(count), "n")
            .group_by(access_log::Column::ClientId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(client, n)| (client, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Calls per partner with one of `outcomes` in the window. The gateway's own failures
    /// have their own outcome (`unavailable`), which no rule asks for.
    pub async fn calls_by_partner(
        &self,
        window: &Window,
        outcomes: &[Outcome],
    ) -> Result<PerPartner, StoreError> {
        let query =
            Self::in_window(window).filter(access_log::Column::Outcome.is_in(strs(outcomes)));
        self.per_partner(query, Func::count(Expr::col(access_log::Column::Id)))
            .await
    }

    /// Distinct customers whose data each partner read in the window.
    pub async fn customers_read_by_partner(
        &self,
        window: &Window,
    ) -> Result<PerPartner, StoreError> {
        let query =
            Self::in_window(window).filter(access_log::Column::Outcome.is_in(strs(&READ_OUTCOMES)));
        self.per_partner(
            query,
            Func::count_distinct(Expr::col(access_log::Column::CustomerId)),
        )
        .await
    }

    /// Reads per partner and hour of the day (UTC) in the window.
    pub async fn reads_by_partner_and_hour(
        &self,
        window: &Window,
    ) -> Result<HashMap<String, [u64; 24]>, StoreError> {
        let hour = match self.db.get_database_backend() {
            DbBackend::Postgres => "CAST(EXTRACT(HOUR FROM \"at\" AT TIME ZONE 'UTC') AS INTEGER)",
            _ => "CAST(strftime('%H', \"at\") AS INTEGER)",
        };
        let rows: Vec<(Option<String>, i32, i64)> = Self::in_window(window)
            .select_only()
            .column(access_log::Column::ClientId)
            .column_as(Expr::cust(hour), "hour")
            .column_as(
                Expr::from(Func::count(Expr::col(access_log::Column::Id))),
                "n",
            )
            .filter(access_log::Column::Outcome.is_in(strs(&READ_OUTCOMES)))
            .group_by(access_log::Column::ClientId)
            .group_by(Expr::cust(hour))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_partner: HashMap<String, [u64; 24]> = HashMap::new();
        for (client, hour, n) in rows {
            let (Some(client), Ok(hour)) = (client, usize::try_from(hour)) else {
                continue;
            };
            if hour < 24 {
                by_partner.entry(client).or_default()[hour] += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(by_partner)
    }

    /// Reads per partner and hour of the day (UTC) over the hours that start in
    /// `[from, until)`, from the hourly totals: four weeks are 134 000 rows per read outcome
    /// at 200 partners, where the log itself holds millions of records. Both bounds are taken
    /// as whole hours (the hours that start at or after `from` and before `until`).
    pub async fn reads_by_partner_and_hour_of_day(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, [u64; 24]>, StoreError> {
        // SQLite keeps hours as RFC 3339 text in UTC (`2026-12-02T07:00:00+00:00`).
        let hour = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                "CAST(EXTRACT(HOUR FROM \"hour\" AT TIME ZONE 'UTC') AS INTEGER)"
            }
            _ => "CAST(substr(\"hour\", 12, 2) AS INTEGER)",
        };
        let rows: Vec<(String, i32, i64)> = hourly::Entity::find()
            .select_only()
            .column(hourly::Column::ClientId)
            .column_as(Expr::cust(hour), "hour_of_day")
            .column_as(Expr::cust("CAST(SUM(\"n\") AS BIGINT)"), "n")
            .filter(hourly::Column::Hour.gte(from))
            .filter(hourly::Column::Hour.lt(until))
            .filter(hourly::Column::Outcome.is_in(strs(&READ_OUTCOMES)))
            // Calls with no partner are keyed '' there; the rule is about partners.
            .filter(hourly::Column::ClientId.ne(""))
            .group_by(hourly::Column::ClientId)
            .group_by(Expr::cust(hour))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_partner: HashMap<String, [u64; 24]> = HashMap::new();
        for (client, hour, n) in rows {
            if let Ok(hour @ 0..24) = usize::try_from(hour) {
                by_partner.entry(client).or_default()[hour] += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(by_partner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{AccessRecord, ChainedRecord};
    use crate::store::testing;
    use chrono::{Duration, TimeZone};

    fn record(
        seq: i64,
        at: DateTime<Utc>,
        client: Option<&str>,
        outcome: Outcome,
    ) -> ChainedRecord {
        ChainedRecord {
            id: 0,
            chain: "c1".to_owned(),
            seq,
            record: AccessRecord {
                at,
                request_id: format!("r{seq}"),
                client_id: client.map(str::to_owned),
                grant_id: None,
                customer_id: Some("c".to_owned()),
                resource: "claims".to_owned(),
                resource_id: None,
                record_ids: Vec::new(),
                fields: Vec::new(),
                outcome,
                status: 200,
                client_ip: None,
            },
            prev_hash: format!("h{}", seq - 1),
            hash: format!("h{seq}"),
        }
    }

    #[tokio::test]
    async fn the_baseline_from_hourly_totals_equals_the_one_from_the_log_over_whole_hours() {
        let (store, _dir) = testing::any_store().await;
        // Five days of calls every 37 minutes: two partners and none, reads and refusals.
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let records = (0..200)
            .map(|i| {
                let client = match i % 7 {
                    0 => None,
                    n if n % 2 == 0 => Some("a"),
                    _ => Some("b"),
                };
                let outcome = match i % 5 {
                    0 => Outcome::Denied,
                    1 => Outcome::NotModified,
                    _ => Outcome::Ok,
                };
                record(i + 1, start + Duration::minutes(37 * i), client, outcome)
            })
            .collect();
        store.insert_access_records(records).await.unwrap();
        let (from, until) = (start + Duration::hours(3), start + Duration::hours(100));
        let from_hourly = store
            .reads_by_partner_and_hour_of_day(from, until)
            .await
            .unwrap();
        let window = store.log_window(from, Some(until)).await.unwrap().unwrap();
        let from_log = store.reads_by_partner_and_hour(&window).await.unwrap();
        assert_eq!(from_hourly, from_log);
        assert_eq!(from_hourly.len(), 2);
        assert!(
            from_hourly
                .values()
                .all(|h| h.iter().filter(|n| **n > 0).count() > 12)
        );
    }
}
