//! Calls per day, partner and outcome: the console's 30-day charts read a few thousand of these
//! rows instead of grouping 30 days of hourly totals by day (284 000 rows, 0.8 s at 10 million
//! records). Filled here from `access_log_hourly`, so a database that already has hourly totals
//! needs no rebuild; from then on both insert paths keep it with the others.
//!
//! As in `access_log_hourly`, `day` is the bucket's start in UTC and `client_id` is `''` for
//! calls whose token named no partner.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AccessLogDaily {
    Table,
    Day,
    ClientId,
    Outcome,
    N,
}

/// The hourly totals summed per UTC day. SQLite keeps instants as RFC 3339 text in UTC
/// (`2026-12-02T07:00:00+00:00`, as the hourly rows hold them), so a day's start is the date
/// part followed by midnight in the same format: the text sea-orm writes for that instant,
/// which the day-range filters compare against. PostgreSQL truncates the instant itself.
fn backfill(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "INSERT INTO \"access_log_daily\" (\"day\", \"client_id\", \"outcome\", \"n\") \
             SELECT date_trunc('day', \"hour\" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
                    \"client_id\", \"outcome\", SUM(\"n\") \
             FROM \"access_log_hourly\" GROUP BY 1, 2, 3"
        }
        _ => {
            "INSERT INTO \"access_log_daily\" (\"day\", \"client_id\", \"outcome\", \"n\") \
             SELECT substr(\"hour\", 1, 10) || 'T00:00:00+00:00', \"client_id\", \"outcome\", \
                    SUM(\"n\") \
             FROM \"access_log_hourly\" GROUP BY 1, 2, 3"
        }
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AccessLogDaily::Table)
                    .col(timestamp_with_time_zone(AccessLogDaily::Day))
                    .col(string(AccessLogDaily::ClientId))
                    .col(string(AccessLogDaily::Outcome))
                    .col(big_integer(AccessLogDaily::N))
                    // Day first: every query asks for a range of days, all partners.
                    .primary_key(
                        Index::create()
                            .col(AccessLogDaily::Day)
                            .col(AccessLogDaily::ClientId)
                            .col(AccessLogDaily::Outcome),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(backfill(manager.get_database_backend()))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AccessLogDaily::Table).to_owned())
            .await
    }
}
