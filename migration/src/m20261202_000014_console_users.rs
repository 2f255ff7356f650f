//! People on the security team who sign in to the console (issue 13). A new account holds a
//! one-time password (`password_set` false) that its owner replaces at the first sign-in.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum ConsoleUsers {
    Table,
    Id,
    /// Lowercased; one account per address.
    Email,
    /// argon2id PHC string.
    PasswordHash,
    /// False while the password is the one-time one printed by `admin user add`.
    PasswordSet,
    CreatedAt,
    DisabledAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleUsers::Table)
                    .col(string(ConsoleUsers::Id).primary_key())
                    .col(string_uniq(ConsoleUsers::Email))
                    .col(string(ConsoleUsers::PasswordHash))
                    .col(boolean(ConsoleUsers::PasswordSet))
                    .col(timestamp_with_time_zone(ConsoleUsers::CreatedAt))
                    .col(timestamp_with_time_zone_null(ConsoleUsers::DisabledAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleUsers::Table).to_owned())
            .await
    }
}
