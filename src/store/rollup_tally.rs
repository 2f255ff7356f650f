//! The console's running totals of a set of records, summed in memory first so that a batch
//! costs one upsert per rollup table, whatever its size (`ON CONFLICT … DO UPDATE`, which
//! SQLite and PostgreSQL both speak). Additive: tallies of disjoint sets of records applied
//! one after the other give the tally of their union.

use super::rollups::Bucket;
use crate::access_log::{AccessRecord, Outcome};
use crate::store::READ_OUTCOMES;
use chrono::{DateTime, Utc};
use entity::{access_log_customer_partners as pairs, access_log_field_reads as field_reads};
use entity::{access_log_daily as daily, access_log_hourly as hourly};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use std::collections::BTreeMap;

/// Rows per statement: 4 parameters a row stays far below SQLite's 32 766 and PostgreSQL's
/// 65 535 bound parameters even for the largest rebuild page.
const ROWS_PER_STATEMENT: usize = 2_000;

/// The key of calls with no partner: a primary-key column cannot be NULL.
pub(super) const NO_PARTNER: &str = "";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    hourly: BTreeMap<(DateTime<Utc>, String, Outcome), i64>,
    daily: BTreeMap<(DateTime<Utc>, String, Outcome), i64>,
    field_reads: BTreeMap<(String, DateTime<Utc>, String), i64>,
    pairs: BTreeMap<(String, String), DateTime<Utc>>,
}

impl Tally {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a AccessRecord>) -> Self {
        let mut tally = Self::default();
        for r in records {
            tally.add(
                r.at,
                r.client_id.as_deref(),
                r.customer_id.as_deref(),
                &r.fields,
                r.outcome,
            );
        }
        tally
    }

    pub fn add(
        &mut self,
        at: DateTime<Utc>,
        client_id: Option<&str>,
        customer_id: Option<&str>,
        fields: &[String],
        outcome: Outcome,
    ) {
        let client = client_id.unwrap_or(NO_PARTNER);
        *self
            .hourly
            .entry((Bucket::Hour.start(at), client.to_owned(), outcome))
            .or_default() += 1;
        let day = Bucket::Day.start(at);
        *self
            .daily
            .entry((day, client.to_owned(), outcome))
            .or_default() += 1;
        if !READ_OUTCOMES.contains(&outcome) {
            return;
        }
        for field in fields {
            *self
                .field_reads
                .entry((client.to_owned(), day, field.clone()))
                .or_default() += 1;
        }
        if let (Some(customer), Some(client)) = (customer_id, client_id) {
            let last = self
                .pairs
                .entry((customer.to_owned(), client.to_owned()))
                .or_insert(at);
            *last = Ord::max(*last, at);
        }
    }

    /// Adds the tally to the stored totals, on `db` (the caller's transaction).
    pub async fn apply<C: ConnectionTrait>(self, db: &C) -> Result<(), DbErr> {
        let excluded = || Alias::new("excluded");
        let hourly_rows: Vec<_> = self
            .hourly
            .into_iter()
            .map(|((hour, client_id, outcome), n)| hourly::ActiveModel {
                hour: Set(hour),
                client_id: Set(client_id),
                outcome: Set(outcome.as_str().to_owned()),
                n: Set(n),
            })
            .collect();
        for chunk in hourly_rows.chunks(ROWS_PER_STATEMENT) {
            hourly::Entity::insert_many(chunk.iter().cloned())
                .on_conflict(
                    OnConflict::columns([
                        hourly::Column::Hour,
                        hourly::Column::ClientId,
                        hourly::Column::Outcome,
                    ])
                    .value(
                        hourly::Column::N,
                        Expr::col((hourly::Entity, hourly::Column::N))
                            .add(Expr::col((excluded(), hourly::Column::N))),
                    )
                    .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
        }
        let daily_rows: Vec<_> = self
            .daily
            .into_iter()
            .map(|((day, client_id, outcome), n)| daily::ActiveModel {
                day: Set(day),
                client_id: Set(client_id),
                outcome: Set(outcome.as_str().to_owned()),
                n: Set(n),
            })
            .collect();
        for chunk in daily_rows.chunks(ROWS_PER_STATEMENT) {
            daily::Entity::insert_many(chunk.iter().cloned())
                .on_conflict(
                    OnConflict::columns([
                        daily::Column::Day,
                        daily::Column::ClientId,
                        daily::Column::Outcome,
                    ])
                    .value(
                        daily::Column::N,
                        Expr::col((daily::Entity, daily::Column::N))
                            .add(Expr::col((excluded(), daily::Column::N))),
                    )
                    .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
        }
        let field_rows: Vec<_> = self
            .field_reads
            .into_iter()
            .map(|((client_id, day, field), n)| field_reads::ActiveModel {
                client_id: Set(client_id),
                day: Set(day),
                field: Set(field),
                n: Set(n),
            })
            .collect();
        for chunk in field_rows.chunks(ROWS_PER_STATEMENT) {
            field_reads::Entity::insert_many(chunk.iter().cloned())
                .on_conflict(
                    OnConflict::columns([
                        field_reads::Column::ClientId,
                        field_reads::Column::Day,
                        field_reads::Column::Field,
                    ])
                    .value(
                        field_reads::Column::N,
                        Expr::col((field_reads::Entity, field_reads::Column::N))
                            .add(Expr::col((excluded(), field_reads::Column::N))),
                    )
                    .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
        }
        let pair_rows: Vec<_> = self
            .pairs
            .into_iter()
            .map(|((customer_id, client_id), at)| pairs::ActiveModel {
                customer_id: Set(customer_id),
                client_id: Set(client_id),
                last_read_at: Set(at),
            })
            .collect();
        // The later of the two: GREATEST (PostgreSQL) and two-argument MAX (SQLite) are not
        // portable, CASE is. SQLite compares the stored text, which orders like the instants
        // since every value is written in one format (RFC 3339, UTC offset).
        let stored = || Expr::col((pairs::Entity, pairs::Column::LastReadAt));
        let incoming = || Expr::col((excluded(), pairs::Column::LastReadAt));
        for chunk in pair_rows.chunks(ROWS_PER_STATEMENT) {
            pairs::Entity::insert_many(chunk.iter().cloned())
                .on_conflict(
                    OnConflict::columns([pairs::Column::CustomerId, pairs::Column::ClientId])
                        .value(
                            pairs::Column::LastReadAt,
                            Expr::case(incoming().gt(stored()), incoming()).finally(stored()),
                        )
                        .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_batch_is_summed_per_bucket_before_it_reaches_the_database() {
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 2, h, m, 0).unwrap();
        let fields = vec!["claims:status".to_owned()];
        let mut tally = Tally::default();
        tally.add(at(10, 5), Some("p"), Some("c"), &fields, Outcome::Ok);
        tally.add(at(10, 55), Some("p"), Some("c"), &fields, Outcome::Ok);
        tally.add(
            at(9, 0),
            Some("p"),
            Some("c"),
            &fields,
            Outcome::NotModified,
        );
        tally.add(at(11, 0), None, None, &[], Outcome::InvalidToken);
        tally.add(at(11, 0), Some("p"), Some("d"), &fields, Outcome::Denied);
        assert_eq!(tally.hourly.len(), 4);
        // The same calls per day: the two hours of p's reads are one day.
        assert_eq!(tally.daily.len(), 4);
        assert_eq!(tally.daily[&(at(0, 0), "p".to_owned(), Outcome::Ok)], 2);
        assert_eq!(tally.daily.values().sum::<i64>(), 5);
        assert_eq!(tally.hourly[&(at(10, 0), "p".to_owned(), Outcome::Ok)], 2);
        assert_eq!(
            tally.hourly[&(at(11, 0), NO_PARTNER.to_owned(), Outcome::InvalidToken)],
            1
        );
        // A refusal disclosed nothing: no field read, no pair.
        let day = at(0, 0);
        assert_eq!(
            tally.field_reads,
            BTreeMap::from([(("p".to_owned(), day, "claims:status".to_owned()), 3)])
        );
        assert_eq!(
            tally.pairs,
            BTreeMap::from([(("c".to_owned(), "p".to_owned()), at(10, 55))])
        );
    }
}
