//! The console's actions go into the same audit trail as the admin API's, under the person's
//! name rather than a token's; an action that takes a reason (suspension, revocation) keeps it.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261201_000008_security_team::AdminAudit;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum People {
    /// The console account that acted; null for calls made with an admin token.
    ConsoleUserId,
    /// Its e-mail address at the time, so the trail reads without a join and survives renames.
    ConsoleUserEmail,
    /// The reason given for a suspension, reinstatement or revocation (bounded by the caller).
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            string_null(People::ConsoleUserId),
            string_null(People::ConsoleUserEmail),
            text_null(People::Reason),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(AdminAudit::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            People::ConsoleUserId,
            People::ConsoleUserEmail,
            People::Reason,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AdminAudit::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
