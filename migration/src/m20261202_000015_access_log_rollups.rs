//! Running totals of the access log for the security console (issue 13), so its overview reads
//! a few thousand rows instead of scanning millions of records. Both insert paths keep them in
//! the transaction that adds the records; `Store::rebuild_rollups` recomputes them.
//!
//! Times are bucket starts in UTC; `client_id` is `''` for calls whose token named no partner,
//! so it can be part of a primary key.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Calls per hour, partner and outcome.
#[derive(DeriveIden)]
enum AccessLogHourly {
    Table,
    Hour,
    ClientId,
    Outcome,
    N,
}

/// Per day, partner and field: how many reads disclosed that field.
#[derive(DeriveIden)]
enum AccessLogFieldReads {
    Table,
    Day,
    ClientId,
    Field,
    N,
}

/// The last time each partner read each customer.
#[derive(DeriveIden)]
enum AccessLogCustomerPartners {
    Table,
    CustomerId,
    ClientId,
    LastReadAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AccessLogHourly::Table)
                    .col(timestamp_with_time_zone(AccessLogHourly::Hour))
                    .col(string(AccessLogHourly::ClientId))
                    .col(string(AccessLogHourly::Outcome))
                    .col(big_integer(AccessLogHourly::N))
                    .primary_key(
                        Index::create()
                            .col(AccessLogHourly::Hour)
                            .col(AccessLogHourly::ClientId)
                            .col(AccessLogHourly::Outcome),
                    )
                    .to_owned(),
            )
            .await?;
        // One partner's page reads its own rows, not every partner's hours.
        manager
            .create_index(
                Index::create()
                    .name("idx_access_log_hourly_client")
                    .table(AccessLogHourly::Table)
                    .col(AccessLogHourly::ClientId)
                    .col(AccessLogHourly::Hour)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AccessLogFieldReads::Table)
                    .col(timestamp_with_time_zone(AccessLogFieldReads::Day))
                    .col(string(AccessLogFieldReads::ClientId))
                    .col(string(AccessLogFieldReads::Field))
                    .col(big_integer(AccessLogFieldReads::N))
                    // Partner first: the one query asks for one partner's days.
                    .primary_key(
                        Index::create()
                            .col(AccessLogFieldReads::ClientId)
                            .col(AccessLogFieldReads::Day)
                            .col(AccessLogFieldReads::Field),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AccessLogCustomerPartners::Table)
                    .col(string(AccessLogCustomerPartners::CustomerId))
                    .col(string(AccessLogCustomerPartners::ClientId))
                    .col(timestamp_with_time_zone(
                        AccessLogCustomerPartners::LastReadAt,
                    ))
                    .primary_key(
                        Index::create()
                            .col(AccessLogCustomerPartners::CustomerId)
                            .col(AccessLogCustomerPartners::ClientId),
                    )
                    .to_owned(),
            )
            .await?;
        // "Since T" and pruning both select by the last read.
        manager
            .create_index(
                Index::create()
                    .name("idx_access_log_customer_partners_last_read")
                    .table(AccessLogCustomerPartners::Table)
                    .col(AccessLogCustomerPartners::LastReadAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AccessLogCustomerPartners::Table.into_iden(),
            AccessLogFieldReads::Table.into_iden(),
            AccessLogHourly::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
