//! Customers who sign in through the insurer's OpenID provider (`[customer_login]`) are found
//! by the provider's issuer and subject. Both are null for built-in accounts; together they are
//! unique. Such customers have no password (an empty hash matches nothing) and their `email`
//! column holds an opaque `oidc:` key without `@`, which no built-in sign-in can name.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000002_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Oidc {
    /// The provider's `iss`, exactly as in its ID tokens.
    OidcIssuer,
    /// The person's `sub` at that provider.
    OidcSubject,
}

const INDEX: &str = "customers_oidc_identity";

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
                        .table(Customers::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Customers::Table)
                    .col(Oidc::OidcIssuer)
                    .col(Oidc::OidcSubject)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Customers::Table).to_owned())
            .await?;
        for column in [Oidc::OidcIssuer, Oidc::OidcSubject] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Customers::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
