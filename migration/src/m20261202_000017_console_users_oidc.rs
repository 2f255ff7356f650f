//! Console accounts that sign in through the workforce OpenID provider (`[console_login]`) are
//! found by the provider's issuer and subject, which stay when a person's e-mail address
//! changes. Both are null for password accounts; together they are unique.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261202_000014_console_users::ConsoleUsers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Oidc {
    /// The provider's `iss`, exactly as in its ID tokens.
    OidcIssuer,
    /// The person's `sub` at that provider.
    OidcSubject,
}

const INDEX: &str = "console_users_oidc_identity";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for mut column in [
            string_null(Oidc::OidcIssuer),
            string_null(Oidc::OidcSubject),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConsoleUsers::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ConsoleUsers::Table)
                    .col(Oidc::OidcIssuer)
                    .col(Oidc::OidcSubject)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(ConsoleUsers::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Oidc::OidcIssuer, Oidc::OidcSubject] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConsoleUsers::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
