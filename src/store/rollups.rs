//! What the security console's charts read: the access log's running totals (per hour,
//! partner and outcome, and the same per day; per day, partner and field; per customer and
//! partner, the last read),
//! kept by both insert paths in the transaction that adds the records. The queries read a few
//! thousand rows whatever the size of the log, and answer in plain data.
//!
//! A query's buckets are every hour or day that overlaps `[since, until)`, whole: the one that
//! holds `since` counts from its start, the one that holds `until` to its end.

use super::rollup_tally::{NO_PARTNER, Tally};
use super::{READ_OUTCOMES, Store, StoreError};
use crate::access_log::Outcome;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use entity::access_log;
use entity::{access_log_customer_partners as pairs, access_log_field_reads as field_reads};
use entity::{access_log_daily as daily, access_log_hourly as hourly};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A chart never spans more buckets than this (83 days of hours, 5 years of days): a query
/// over a longer range keeps its newest buckets, so no range can make an answer large.
pub const MAX_BUCKETS: usize = 2_000;

/// Records read per page while rebuilding: a page's tally stays a few megabytes.
const REBUILD_PAGE: u64 = 50_000;

/// The outcomes that refused the call or failed it: every one that disclosed nothing.
pub fn refusal_outcomes() -> impl Iterator<Item = Outcome> {
    Outcome::ALL
        .into_iter()
        .filter(|o| !READ_OUTCOMES.contains(o))
}

/// The width of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    fn width(self) -> TimeDelta {
        match self {
            Bucket::Hour => TimeDelta::hours(1),
            Bucket::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket that holds `at` (UTC: days start at midnight UTC).
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        // Truncation fails only for instants hundreds of years away, which no record has.
        at.duration_trunc(self.width()).unwrap_or(at)
    }

    /// The end of the bucket that holds the instant just before `at`.
    fn end_before(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(at);
        if start == at {
            at
        } else {
            start + self.width()
        }
    }

    /// Every bucket overlapping `[since, until)`, oldest first, at most [`MAX_BUCKETS`] (the
    /// newest).
    pub fn starts(self, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let end = self.end_before(until);
        let mut first = self.start(since);
        let span = (end - first).num_seconds() / self.width().num_seconds();
        let max = i64::try_from(MAX_BUCKETS).unwrap_or(i64::MAX);
        if span > max {
            first = end - self.width() * i32::try_from(max).unwrap_or(i32::MAX);
        }
        let mut starts = Vec::new();
        let mut at = first;
        while at < end {
            starts.push(at);
            at += self.width();
        }
        starts
    }
}

/// Who or what a series counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeriesName {
    Partner(String),
    /// Calls whose token named no partner.
    NoPartner,
    Outcome(Outcome),
    Field(String),
    /// Everything beyond the top N, summed.
    Other,
}

impl fmt::Display for SeriesName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeriesName::Partner(id) | SeriesName::Field(id) => f.write_str(id),
            SeriesName::NoPartner => f.write_str("(no partner)"),
            SeriesName::Outcome(o) => write!(f, "{o}"),
            SeriesName::Other => f.write_str("(other)"),
        }
    }
}

/// One series: a count per bucket of its [`TimeSeries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: SeriesName,
    pub counts: Vec<u64>,
}

/// Counts per time bucket, one series each; every bucket of the range is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSeries {
    pub bucket: Bucket,
    pub starts: Vec<DateTime<Utc>>,
    pub series: Vec<Series>,
}

/// One bar of a ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    pub name: String,
    pub count: u64,
}

/// Rows removed by [`Store::prune_rollups`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RollupsPruned {
    pub hourly: u64,
    pub daily: u64,
    pub field_reads: u64,
    pub pairs: u64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Lays `(bucket, name, n)` rows out as series over `starts`: the `top` names with the most in
/// all (ties by name, so the answer is the same every time) each get a series, the rest are
/// summed in [`SeriesName::Other`]. `top: None` keeps every name.
fn lay_out(
    bucket: Bucket,
    starts: Vec<DateTime<Utc>>,
    rows: Vec<(DateTime<Utc>, SeriesName, u64)>,
    top: Option<usize>,
) -> TimeSeries {
    let index: HashMap<DateTime<Utc>, usize> =
        starts.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut totals: BTreeMap<&SeriesName, u64> = BTreeMap::new();
    for (_, name, n) in &rows {
        *totals.entry(name).or_default() += n;
    }
    let mut ranked: Vec<(&SeriesName, u64)> = totals.into_iter().collect();
    if top.is_some() {
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    }
    let keep = top.unwrap_or(ranked.len()).min(ranked.len());
    let mut slot: HashMap<SeriesName, usize> = ranked[..keep]
        .iter()
        .enumerate()
        .map(|(i, (name, _))| ((*name).clone(), i))
        .collect();
    let mut series: Vec<Series> = ranked[..keep]
        .iter()
        .map(|(name, _)| Series {
            name: (*name).clone(),
            counts: vec![0; starts.len()],
        })
        .collect();
    if keep < ranked.len() {
        slot.insert(SeriesName::Other, series.len());
        series.push(Series {
            name: SeriesName::Other,
            counts: vec![0; starts.len()],
        });
    }
    for (at, name, n) in rows {
        let (Some(&i), Some(&s)) = (
            index.get(&at),
            slot.get(&name).or_else(|| slot.get(&SeriesName::Other)),
        ) else {
            continue;
        };
        series[s].counts[i] += n;
    }
    TimeSeries {
        bucket,
        starts,
        series,
    }
}

fn partner(client_id: String) -> SeriesName {
    if client_id == NO_PARTNER {
        SeriesName::NoPartner
    } else {
        SeriesName::Partner(client_id)
    }
}

/// What a time series is grouped by besides its bucket.
#[derive(Debug, Clone, Copy)]
enum By {
    Partner,
    Outcome,
}

fn outcome_strs(outcomes: impl Iterator<Item = Outcome>) -> Vec<&'static str> {
    outcomes.map(Outcome::as_str).collect()
}

impl Store {
    /// Calls with one of `outcomes` per bucket of `starts` and `by`, summed: days from the
    /// daily totals (a few thousand rows for a month), hours from the hourly ones.
    async fn sums(
        &self,
        bucket: Bucket,
        starts: &[DateTime<Utc>],
        by: By,
        outcomes: Vec<&'static str>,
    ) -> Result<Vec<(DateTime<Utc>, String, u64)>, StoreError> {
        let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
            return Ok(Vec::new());
        };
        let (first, end) = (*first, *last + bucket.width());
        let total = || Expr::cust("CAST(SUM(\"n\") AS BIGINT)");
        let rows: Vec<(DateTime<Utc>, String, i64)> = match bucket {
            Bucket::Hour => {
                let by = match by {
                    By::Partner => hourly::Column::ClientId,
                    By::Outcome => hourly::Column::Outcome,
                };
                hourly::Entity::find()
                    .select_only()
                    .column(hourly::Column::Hour)
                    .column(by)
                    .column_as(total(), "total")
                    .filter(hourly::Column::Hour.gte(first))
                    .filter(hourly::Column::Hour.lt(end))
                    .filter(hourly::Column::Outcome.is_in(outcomes))
                    .group_by(hourly::Column::Hour)
                    .group_by(by)
                    .into_tuple()
                    .all(&self.db)
                    .await?
            }
            Bucket::Day => {
                let by = match by {
                    By::Partner => daily::Column::ClientId,
                    By::Outcome => daily::Column::Outcome,
                };
                daily::Entity::find()
                    .select_only()
                    .column(daily::Column::Day)
                    .column(by)
                    .column_as(total(), "total")
                    .filter(daily::Column::Day.gte(first))
                    .filter(daily::Column::Day.lt(end))
                    .filter(daily::Column::Outcome.is_in(outcomes))
                    .group_by(daily::Column::Day)
                    .group_by(by)
                    .into_tuple()
                    .all(&self.db)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(at, name, n)| (at, name, count(n)))
            .collect())
    }

    /// Reads (calls that disclosed data) per partner and bucket: the `top` partners with the
    /// most reads over the range, and the rest as one series.
    pub async fn reads_per_partner(
        &self,
        bucket: Bucket,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        top: usize,
    ) -> Result<TimeSeries, StoreError> {
        let starts = bucket.starts(since, until);
        let rows = self
            .sums(
                bucket,
                &starts,
                By::Partner,
                outcome_strs(READ_OUTCOMES.into_iter()),
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(|(at, client, n)| (at, partner(client), n))
            .collect();
        Ok(lay_out(bucket, starts, rows, Some(top)))
    }

    /// Refused and failed calls per outcome and bucket, every partner together; one series per
    /// outcome that occurred, in [`Outcome::ALL`] order.
    pub async fn refusals_per_outcome(
        &self,
        bucket: Bucket,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<TimeSeries, StoreError> {
        let starts = bucket.starts(since, until);
        let rows = self
            .sums(
                bucket,
                &starts,
                By::Outcome,
                outcome_strs(refusal_outcomes()),
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(|(at, outcome, n)| {
                let outcome = Outcome::parse(&outcome)
                    .ok_or_else(|| StoreError::corrupt(format!("outcome `{outcome}`")))?;
                Ok((at, SeriesName::Outcome(outcome), n))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(lay_out(bucket, starts, rows, None))
    }

    /// One partner's calls per outcome over the hours overlapping `[since, until)`: every
    /// outcome, in [`Outcome::ALL`] order, zero when it did not occur.
    pub async fn outcome_totals(
        &self,
        client_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(Outcome, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = hourly::Entity::find()
            .select_only()
            .column(hourly::Column::Outcome)
            .column_as(Expr::cust("CAST(SUM(\"n\") AS BIGINT)"), "total")
            .filter(hourly::Column::ClientId.eq(client_id))
            .filter(hourly::Column::Hour.gte(Bucket::Hour.start(since)))
            .filter(hourly::Column::Hour.lt(Bucket::Hour.end_before(until)))
            .group_by(hourly::Column::Outcome)
            .into_tuple()
            .all(&self.db)
            .await?;
        let by_outcome: HashMap<String, i64> = rows.into_iter().collect();
        Ok(Outcome::ALL
            .into_iter()
            .map(|o| (o, by_outcome.get(o.as_str()).copied().map_or(0, count)))
            .collect())
    }

    /// One partner's reads per field and day: the `top` fields read most, the rest as one
    /// series.
    pub async fn reads_per_field(
        &self,
        client_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        top: usize,
    ) -> Result<TimeSeries, StoreError> {
        let starts = Bucket::Day.starts(since, until);
        let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
            return Ok(lay_out(Bucket::Day, starts, Vec::new(), Some(top)));
        };
        let rows: Vec<(DateTime<Utc>, String, i64)> = field_reads::Entity::find()
            .select_only()
            .column(field_reads::Column::Day)
            .column(field_reads::Column::Field)
            .column(field_reads::Column::N)
            .filter(field_reads::Column::ClientId.eq(client_id))
            .filter(field_reads::Column::Day.gte(*first))
            .filter(field_reads::Column::Day.lte(*last))
            .into_tuple()
            .all(&self.db)
            .await?;
        let rows = rows
            .into_iter()
            .map(|(day, field, n)| (day, SeriesName::Field(field), count(n)))
            .collect();
        Ok(lay_out(Bucket::Day, starts, rows, Some(top)))
    }

    /// The customers read by the most partners since `since` (each partner counted once),
    /// most first, ties by customer id.
    pub async fn top_customers_by_partners(
        &self,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Ranked>, StoreError> {
        let partners = Expr::cust("COUNT(*)");
        let rows: Vec<(String, i64)> = pairs::Entity::find()
            .select_only()
            .column(pairs::Column::CustomerId)
            .column_as(partners.clone(), "partners")
            .filter(pairs::Column::LastReadAt.gte(since))
            .group_by(pairs::Column::CustomerId)
            .order_by_desc(partners)
            .order_by_asc(pairs::Column::CustomerId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, n)| Ranked {
                name,
                count: count(n),
            })
            .collect())
    }

    /// Recomputes every running total from the records held, in one transaction: for a
    /// database filled around the insert paths (a seeder, a restore). Long on a large log, and
    /// the gateway's writer waits meanwhile: run it with the gateway stopped.
    pub async fn rebuild_rollups(&self) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        hourly::Entity::delete_many().exec(&txn).await?;
        daily::Entity::delete_many().exec(&txn).await?;
        field_reads::Entity::delete_many().exec(&txn).await?;
        pairs::Entity::delete_many().exec(&txn).await?;
        let mut after = i64::MIN;
        loop {
            #[allow(clippy::type_complexity)]
            let page: Vec<(
                i64,
                DateTime<Utc>,
                Option<String>,
                Option<String>,
                String,
                String,
            )> = access_log::Entity::find()
                .select_only()
                .columns([
                    access_log::Column::Id,
                    access_log::Column::At,
                    access_log::Column::ClientId,
                    access_log::Column::CustomerId,
                    access_log::Column::Fields,
                    access_log::Column::Outcome,
                ])
                .filter(access_log::Column::Id.gt(after))
                .order_by_asc(access_log::Column::Id)
                .limit(REBUILD_PAGE)
                .into_tuple()
                .all(&txn)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            let mut tally = Tally::default();
            for (_, at, client, customer, fields, outcome) in page {
                let fields: Vec<String> =
                    serde_json::from_str(&fields).map_err(StoreError::corrupt)?;
                let outcome = Outcome::parse(&outcome)
                    .ok_or_else(|| StoreError::corrupt(format!("outcome `{outcome}`")))?;
                tally.add(at, client.as_deref(), customer.as_deref(), &fields, outcome);
            }
            tally.apply(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Removes hourly, daily and per-field totals of buckets that start before `history_before`, and
    /// customer–partner pairs last read before `pairs_before`.
    pub async fn prune_rollups(
        &self,
        history_before: DateTime<Utc>,
        pairs_before: DateTime<Utc>,
    ) -> Result<RollupsPruned, StoreError> {
        let txn = self.db.begin().await?;
        let pruned = RollupsPruned {
            hourly: hourly::Entity::delete_many()
                .filter(hourly::Column::Hour.lt(history_before))
                .exec(&txn)
                .await?
                .rows_affected,
            daily: daily::Entity::delete_many()
                .filter(daily::Column::Day.lt(history_before))
                .exec(&txn)
                .await?
                .rows_affected,
            field_reads: field_reads::Entity::delete_many()
                .filter(field_reads::Column::Day.lt(history_before))
                .exec(&txn)
                .await?
                .rows_affected,
            pairs: pairs::Entity::delete_many()
                .filter(pairs::Column::LastReadAt.lt(pairs_before))
                .exec(&txn)
                .await?
                .rows_affected,
        };
        txn.commit().await?;
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{AccessRecord, ChainedRecord};
    use crate::store::testing;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, minute, 0)
            .unwrap()
    }

    fn record(
        seq: i64,
        when: DateTime<Utc>,
        client: Option<&str>,
        customer: &str,
        outcome: Outcome,
    ) -> ChainedRecord {
        let read = READ_OUTCOMES.contains(&outcome);
        ChainedRecord {
            id: 0,
            chain: "c1".to_owned(),
            seq,
            record: AccessRecord {
                at: when,
                request_id: format!("r{seq}"),
                client_id: client.map(str::to_owned),
                grant_id: None,
                customer_id: Some(customer.to_owned()),
                resource: "claims".to_owned(),
                resource_id: None,
                record_ids: Vec::new(),
                fields: if read {
                    vec!["claims:status".to_owned(), "claims:claim_number".to_owned()]
                } else {
                    Vec::new()
                },
                outcome,
                status: 200,
                client_ip: None,
            },
            prev_hash: format!("h{}", seq - 1),
            hash: format!("h{seq}"),
        }
    }

    /// Ten records over two days: partners a, b and none, a refusal or two.
    fn batch() -> Vec<ChainedRecord> {
        vec![
            record(1, at(1, 10, 5), Some("a"), "c1", Outcome::Ok),
            record(2, at(1, 10, 30), Some("a"), "c2", Outcome::Ok),
            record(3, at(1, 10, 40), Some("b"), "c1", Outcome::NotModified),
            record(4, at(1, 11, 0), Some("b"), "c1", Outcome::Denied),
            record(5, at(1, 11, 1), None, "c3", Outcome::InvalidToken),
            record(6, at(1, 23, 59), Some("a"), "c1", Outcome::Ok),
            record(7, at(2, 0, 0), Some("c"), "c1", Outcome::Ok),
            record(8, at(2, 1, 0), Some("a"), "c2", Outcome::RateLimited),
            record(9, at(2, 1, 30), Some("b"), "c2", Outcome::Ok),
            record(10, at(2, 2, 0), Some("a"), "c1", Outcome::NotModified),
        ]
    }

    /// Every rollup row, in key order.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        hourly: Vec<(DateTime<Utc>, String, String, i64)>,
        daily: Vec<(DateTime<Utc>, String, String, i64)>,
        field_reads: Vec<(String, DateTime<Utc>, String, i64)>,
        pairs: Vec<(String, String, DateTime<Utc>)>,
    }

    async fn snapshot(store: &Store) -> Snapshot {
        Snapshot {
            hourly: hourly::Entity::find()
                .order_by_asc(hourly::Column::Hour)
                .order_by_asc(hourly::Column::ClientId)
                .order_by_asc(hourly::Column::Outcome)
                .all(&store.db)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.hour, m.client_id, m.outcome, m.n))
                .collect(),
            daily: daily::Entity::find()
                .order_by_asc(daily::Column::Day)
                .order_by_asc(daily::Column::ClientId)
                .order_by_asc(daily::Column::Outcome)
                .all(&store.db)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.day, m.client_id, m.outcome, m.n))
                .collect(),
            field_reads: field_reads::Entity::find()
                .order_by_asc(field_reads::Column::ClientId)
                .order_by_asc(field_reads::Column::Day)
                .order_by_asc(field_reads::Column::Field)
                .all(&store.db)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.client_id, m.day, m.field, m.n))
                .collect(),
            pairs: pairs::Entity::find()
                .order_by_asc(pairs::Column::CustomerId)
                .order_by_asc(pairs::Column::ClientId)
                .all(&store.db)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.customer_id, m.client_id, m.last_read_at))
                .collect(),
        }
    }

    /// The calls counted, checked to agree between the hourly and the daily totals.
    fn total(s: &Snapshot) -> i64 {
        let hourly = s.hourly.iter().map(|r| r.3).sum();
        assert_eq!(s.daily.iter().map(|r| r.3).sum::<i64>(), hourly, "{s:?}");
        hourly
    }

    #[tokio::test]
    async fn a_batch_imported_twice_counts_once() {
        let (store, _dir) = testing::any_store().await;
        assert_eq!(store.import_access_records(&batch()).await.unwrap(), 10);
        let once = snapshot(&store).await;
        assert_eq!(total(&once), 10);
        assert_eq!(store.import_access_records(&batch()).await.unwrap(), 0);
        assert_eq!(snapshot(&store).await, once);
    }

    #[tokio::test]
    async fn a_batch_partly_present_counts_only_its_new_records() {
        let (store, _dir) = testing::any_store().await;
        let all = batch();
        store.import_access_records(&all[..4]).await.unwrap();
        assert_eq!(total(&snapshot(&store).await), 4);
        assert_eq!(store.import_access_records(&all[2..]).await.unwrap(), 6);
        let (reference, _dir2) = testing::store().await;
        reference.import_access_records(&all).await.unwrap();
        let parts = snapshot(&store).await;
        assert_eq!(total(&parts), 10);
        assert_eq!(parts, snapshot(&reference).await);
    }

    #[tokio::test]
    async fn a_refused_import_counts_nothing() {
        let (store, _dir) = testing::store().await;
        let all = batch();
        store.import_access_records(&all[..2]).await.unwrap();
        let mut forged = all[1..4].to_vec();
        forged[0].hash = "forged".to_owned();
        assert!(matches!(
            store.import_access_records(&forged).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(total(&snapshot(&store).await), 2);
    }

    #[tokio::test]
    async fn the_database_writer_counts_what_it_inserts() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        let s = snapshot(&store).await;
        assert_eq!(total(&s), 10);
        assert!(
            s.hourly
                .contains(&(at(1, 10, 0), "a".to_owned(), "ok".to_owned(), 2))
        );
        assert!(
            s.hourly
                .contains(&(at(1, 11, 0), String::new(), "invalid_token".to_owned(), 1))
        );
        // Per day: a's three reads of the first day, 23:59 included; 00:00 is the next day.
        assert!(
            s.daily
                .contains(&(at(1, 0, 0), "a".to_owned(), "ok".to_owned(), 3))
        );
        assert!(
            s.daily
                .contains(&(at(2, 0, 0), "c".to_owned(), "ok".to_owned(), 1))
        );
        // Reads only: b's denied call disclosed nothing.
        assert!(s.field_reads.contains(&(
            "a".to_owned(),
            at(1, 0, 0),
            "claims:status".to_owned(),
            3
        )));
        assert!(
            s.pairs
                .contains(&("c1".to_owned(), "a".to_owned(), at(2, 2, 0)))
        );
        assert_eq!(s.pairs.len(), 5);
        // A conflicting batch rolls back with its totals.
        assert!(store.insert_access_records(batch()).await.is_err());
        assert_eq!(snapshot(&store).await, s);
    }

    #[tokio::test]
    async fn a_rebuild_equals_the_incremental_totals() {
        let (store, _dir) = testing::any_store().await;
        let all = batch();
        store
            .insert_access_records(all[..3].to_vec())
            .await
            .unwrap();
        store.import_access_records(&all[3..7]).await.unwrap();
        store
            .insert_access_records(all[7..].to_vec())
            .await
            .unwrap();
        let incremental = snapshot(&store).await;
        store.rebuild_rollups().await.unwrap();
        assert_eq!(snapshot(&store).await, incremental);
        // And from nothing (a seeded database).
        hourly::Entity::delete_many().exec(&store.db).await.unwrap();
        daily::Entity::delete_many().exec(&store.db).await.unwrap();
        pairs::Entity::delete_many().exec(&store.db).await.unwrap();
        store.rebuild_rollups().await.unwrap();
        assert_eq!(snapshot(&store).await, incremental);
    }

    #[tokio::test]
    async fn the_migration_fills_the_daily_totals_from_the_hourly_ones() {
        use migration::{Migrator, MigratorTrait};
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        store.rebuild_rollups().await.unwrap();
        let rebuilt = snapshot(&store).await;
        // Back to before the daily table (and whatever came after it), then up again: the
        // migration sums the hourly totals that are already there.
        let migrations = Migrator::migrations();
        let daily_step = migrations
            .iter()
            .position(|m| m.name() == "m20261202_000018_access_log_daily")
            .unwrap();
        let steps = u32::try_from(migrations.len() - daily_step).unwrap();
        Migrator::down(&store.db, Some(steps)).await.unwrap();
        Migrator::up(&store.db, None).await.unwrap();
        assert_eq!(snapshot(&store).await, rebuilt);
    }

    #[tokio::test]
    async fn reads_per_partner_keep_the_top_partners_and_sum_the_rest() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        // Hours 10:00 to 11:59 of the first day, a bucket boundary mid-range.
        let hours = store
            .reads_per_partner(Bucket::Hour, at(1, 10, 30), at(1, 11, 30), 1)
            .await
            .unwrap();
        assert_eq!(hours.starts, vec![at(1, 10, 0), at(1, 11, 0)]);
        assert_eq!(
            hours.series,
            vec![
                Series {
                    name: SeriesName::Partner("a".to_owned()),
                    counts: vec![2, 0]
                },
                Series {
                    name: SeriesName::Other,
                    counts: vec![1, 0]
                },
            ]
        );
        let days = store
            .reads_per_partner(Bucket::Day, at(1, 0, 0), at(3, 0, 0), 5)
            .await
            .unwrap();
        assert_eq!(days.starts, vec![at(1, 0, 0), at(2, 0, 0)]);
        let names: Vec<String> = days.series.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(days.series[0].counts, vec![3, 1]);
        assert_eq!(days.series[1].counts, vec![1, 1]);
        assert_eq!(days.series[2].counts, vec![0, 1]);
    }

    #[tokio::test]
    async fn refusals_are_counted_per_outcome() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        let refusals = store
            .refusals_per_outcome(Bucket::Day, at(1, 0, 0), at(2, 12, 0))
            .await
            .unwrap();
        assert_eq!(
            refusals.series,
            vec![
                Series {
                    name: SeriesName::Outcome(Outcome::Denied),
                    counts: vec![1, 0]
                },
                Series {
                    name: SeriesName::Outcome(Outcome::RateLimited),
                    counts: vec![0, 1]
                },
                Series {
                    name: SeriesName::Outcome(Outcome::InvalidToken),
                    counts: vec![1, 0]
                },
            ]
        );
    }

    #[tokio::test]
    async fn customers_rank_by_partners_reading_them_since() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        let top = store
            .top_customers_by_partners(at(1, 0, 0), 10)
            .await
            .unwrap();
        let ranked = |name: &str, count| Ranked {
            name: name.to_owned(),
            count,
        };
        // c3's only call was refused: not a read.
        assert_eq!(top, vec![ranked("c1", 3), ranked("c2", 2)]);
        let later = store
            .top_customers_by_partners(at(2, 1, 0), 1)
            .await
            .unwrap();
        assert_eq!(later, vec![ranked("c1", 1)]);
    }

    #[tokio::test]
    async fn one_partners_fields_and_outcomes() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        let fields = store
            .reads_per_field("a", at(1, 0, 0), at(2, 12, 0), 1)
            .await
            .unwrap();
        assert_eq!(fields.starts, vec![at(1, 0, 0), at(2, 0, 0)]);
        // Both fields were read equally: ties go by name.
        assert_eq!(
            fields.series,
            vec![
                Series {
                    name: SeriesName::Field("claims:claim_number".to_owned()),
                    counts: vec![3, 1]
                },
                Series {
                    name: SeriesName::Other,
                    counts: vec![3, 1]
                },
            ]
        );
        let totals = store
            .outcome_totals("a", at(1, 0, 0), at(3, 0, 0))
            .await
            .unwrap();
        assert_eq!(totals.len(), Outcome::ALL.len());
        assert_eq!(totals[0], (Outcome::Ok, 3));
        assert_eq!(totals[1], (Outcome::NotModified, 1));
        assert_eq!(totals[4], (Outcome::RateLimited, 1));
        assert_eq!(totals.iter().map(|t| t.1).sum::<u64>(), 5);
    }

    #[tokio::test]
    async fn pruning_drops_old_buckets_and_stale_pairs() {
        let (store, _dir) = testing::any_store().await;
        store.insert_access_records(batch()).await.unwrap();
        let pruned = store.prune_rollups(at(2, 0, 0), at(2, 1, 0)).await.unwrap();
        assert_eq!(pruned.hourly, 5);
        assert_eq!(pruned.daily, 4);
        assert_eq!(pruned.field_reads, 4);
        let left = snapshot(&store).await;
        assert!(left.hourly.iter().all(|r| r.0 >= at(2, 0, 0)));
        assert!(left.daily.iter().all(|r| r.0 >= at(2, 0, 0)));
        assert!(left.pairs.iter().all(|r| r.2 >= at(2, 1, 0)));
        assert_eq!(left.pairs.len(), 2);
    }

    #[test]
    fn buckets_cover_the_range_whole_and_are_bounded() {
        let hours = Bucket::Hour.starts(at(1, 10, 30), at(1, 12, 0));
        assert_eq!(hours, vec![at(1, 10, 0), at(1, 11, 0)]);
        assert!(Bucket::Day.starts(at(2, 0, 0), at(2, 0, 0)).is_empty());
        let long = Bucket::Hour.starts(at(1, 0, 0) - TimeDelta::days(3650), at(1, 0, 0));
        assert_eq!(long.len(), MAX_BUCKETS);
        assert_eq!(long.last(), Some(&(at(1, 0, 0) - TimeDelta::hours(1))));
    }
}
