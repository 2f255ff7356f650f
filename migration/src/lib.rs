//! Database migrations for Keyhole.
//!
//! One migration per table, applied in order by [`Migrator`]. The schema
//! builder is used throughout so the same migrations run on SQLite and
//! PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_partners;
mod m20261122_000002_create_customers;
mod m20261122_000003_create_grants;
mod m20261122_000004_create_refresh_tokens;
mod m20261122_000005_create_signing_keys;
mod m20261122_000006_create_access_log;
mod m20261122_000007_create_admin_tokens;
mod m20261201_000008_security_team;
mod m20261202_000009_admin_audit_query_hash;
mod m20261202_000010_access_log_chains;
mod m20261202_000011_revoked_tokens;
mod m20261202_000012_signing_key_activation;
mod m20261202_000013_token_grace;
mod m20261202_000014_console_users;
mod m20261202_000015_access_log_rollups;
mod m20261202_000016_admin_audit_people;
mod m20261202_000017_console_users_oidc;
mod m20261202_000018_access_log_daily;
mod m20261202_000019_customer_partners_by_customer;
mod m20261202_000020_customers_oidc;
mod m20261202_000021_partners_fapi;
mod m20261202_000022_refresh_token_binding;

pub use m20261202_000010_access_log_chains::LEGACY_CHAIN;

/// Runs every Keyhole migration in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_partners::Migration),
            Box::new(m20261122_000002_create_customers::Migration),
            Box::new(m20261122_000003_create_grants::Migration),
            Box::new(m20261122_000004_create_refresh_tokens::Migration),
            Box::new(m20261122_000005_create_signing_keys::Migration),
            Box::new(m20261122_000006_create_access_log::Migration),
            Box::new(m20261122_000007_create_admin_tokens::Migration),
            Box::new(m20261201_000008_security_team::Migration),
            Box::new(m20261202_000009_admin_audit_query_hash::Migration),
            Box::new(m20261202_000010_access_log_chains::Migration),
            Box::new(m20261202_000011_revoked_tokens::Migration),
            Box::new(m20261202_000012_signing_key_activation::Migration),
            Box::new(m20261202_000013_token_grace::Migration),
            Box::new(m20261202_000014_console_users::Migration),
            Box::new(m20261202_000015_access_log_rollups::Migration),
            Box::new(m20261202_000016_admin_audit_people::Migration),
            Box::new(m20261202_000017_console_users_oidc::Migration),
            Box::new(m20261202_000018_access_log_daily::Migration),
            Box::new(m20261202_000019_customer_partners_by_customer::Migration),
            Box::new(m20261202_000020_customers_oidc::Migration),
            Box::new(m20261202_000021_partners_fapi::Migration),
            Box::new(m20261202_000022_refresh_token_binding::Migration),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection};

    const TABLES: [&str; 15] = [
        "partners",
        "customers",
        "grants",
        "refresh_tokens",
        "signing_keys",
        "access_log",
        "admin_tokens",
        "admin_audit",
        "chain_checkpoints",
        "revoked_tokens",
        "console_users",
        "access_log_hourly",
        "access_log_field_reads",
        "access_log_customer_partners",
        "access_log_daily",
    ];

    async fn tables_present(db: &DatabaseConnection) -> Vec<&'static str> {
        let manager = SchemaManager::new(db);
        let mut present = Vec::new();
        for table in TABLES {
            if manager.has_table(table).await.unwrap() {
                present.push(table);
            }
        }
        present
    }

    /// The columns of the newest migration (issue 17's grace window).
    const GRACE_COLUMNS: [(&str, &str); 5] = [
        ("grants", "code_redeemed_at"),
        ("grants", "code_reissue_sealed"),
        ("grants", "code_reissue_until"),
        ("refresh_tokens", "reissue_sealed"),
        ("refresh_tokens", "reissue_until"),
    ];

    async fn grace_columns_present(db: &DatabaseConnection) -> usize {
        let manager = SchemaManager::new(db);
        let mut present = 0;
        for (table, column) in GRACE_COLUMNS {
            if manager.has_column(table, column).await.unwrap() {
                present += 1;
            }
        }
        present
    }

    async fn up_down_up(db: &DatabaseConnection) {
        Migrator::up(db, None).await.unwrap();
        assert_eq!(tables_present(db).await, TABLES);
        assert_eq!(grace_columns_present(db).await, GRACE_COLUMNS.len());

        // Down to just before the grace step (and whatever was registered after it), then up.
        let migrations = Migrator::migrations();
        let grace = migrations
            .iter()
            .position(|m| m.name() == "m20261202_000013_token_grace")
            .unwrap();
        let steps: u32 = (migrations.len() - grace).try_into().unwrap();
        Migrator::down(db, Some(steps)).await.unwrap();
        assert_eq!(grace_columns_present(db).await, 0);
        Migrator::up(db, None).await.unwrap();
        assert_eq!(grace_columns_present(db).await, GRACE_COLUMNS.len());

        Migrator::down(db, None).await.unwrap();
        assert!(tables_present(db).await.is_empty());

        Migrator::up(db, None).await.unwrap();
        assert_eq!(tables_present(db).await, TABLES);
        assert!(
            Migrator::get_pending_migrations(db)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A key stored before `signing_keys.activates_at` existed gets none (it signs as before),
    /// and stays through the column's `down()`.
    async fn keys_from_before_activation_times_stay_active(db: &DatabaseConnection) {
        use m20261122_000005_create_signing_keys::SigningKeys;
        let activation = Migrator::migrations()
            .iter()
            .position(|m| m.name() == "m20261202_000012_signing_key_activation")
            .unwrap();
        Migrator::up(db, Some(activation.try_into().unwrap()))
            .await
            .unwrap();
        let manager = SchemaManager::new(db);
        assert!(
            !manager
                .has_column("signing_keys", "activates_at")
                .await
                .unwrap()
        );
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(SigningKeys::Table)
                    .columns([
                        SigningKeys::Kid,
                        SigningKeys::PrivateKey,
                        SigningKeys::PublicKey,
                        SigningKeys::CreatedAt,
                    ])
                    .values_panic([
                        Expr::val("before"),
                        Expr::val(vec![1u8]),
                        Expr::val(vec![2u8]),
                        Expr::current_timestamp(),
                    ])
                    .to_owned(),
            )
            .await
            .unwrap();

        Migrator::up(db, None).await.unwrap();
        assert!(
            manager
                .has_column("signing_keys", "activates_at")
                .await
                .unwrap()
        );
        let without = Query::select()
            .expr_as(Expr::col(Asterisk).count(), "n")
            .from(SigningKeys::Table)
            .and_where(Expr::col("activates_at").is_null())
            .to_owned();
        let row = db.query_one(&without).await.unwrap().unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);

        // Back down through this migration (and any after it).
        let from_activation = Migrator::migrations().len() - activation;
        Migrator::down(db, Some(from_activation.try_into().unwrap()))
            .await
            .unwrap();
        assert!(
            !manager
                .has_column("signing_keys", "activates_at")
                .await
                .unwrap()
        );
        let kept = Query::select()
            .expr_as(Expr::col(Asterisk).count(), "n")
            .from(SigningKeys::Table)
            .to_owned();
        let row = db.query_one(&kept).await.unwrap().unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
        Migrator::up(db, None).await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_up_down_up() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        up_down_up(&db).await;
    }

    #[tokio::test]
    async fn sqlite_keys_from_before_activation_times_stay_active() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        keys_from_before_activation_times_stay_active(&db).await;
    }

    /// Runs the same checks against PostgreSQL when `KEYHOLE_DATABASE_URL` names a
    /// PostgreSQL server (as `.ci/run` sets it), in a scratch database made for this test.
    #[tokio::test]
    async fn postgres_up_down_up() {
        let url = match std::env::var("KEYHOLE_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => url,
            _ => {
                eprintln!("skipped: KEYHOLE_DATABASE_URL does not name a PostgreSQL server");
                return;
            }
        };
        let admin = Database::connect(url.clone()).await.unwrap();
        let name = format!(
            "kh_migration_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        let scratch = match url.rfind('/') {
            Some(slash) => format!("{}/{name}", &url[..slash]),
            None => panic!("KEYHOLE_DATABASE_URL has no database path"),
        };
        let db = Database::connect(scratch).await.unwrap();
        keys_from_before_activation_times_stay_active(&db).await;
        up_down_up(&db).await;
        db.close().await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{name}\""))
            .await
            .unwrap();
    }

    fn all_tables() -> Vec<TableCreateStatement> {
        vec![
            m20261122_000001_create_partners::create_table(),
            m20261122_000002_create_customers::create_table(),
            m20261122_000003_create_grants::create_table(),
            m20261122_000004_create_refresh_tokens::create_table(),
            m20261122_000005_create_signing_keys::create_table(),
            m20261122_000006_create_access_log::create_table(),
            m20261122_000007_create_admin_tokens::create_table(),
        ]
    }

    fn all_indexes() -> Vec<IndexCreateStatement> {
        let mut indexes = m20261122_000003_create_grants::create_indexes();
        indexes.extend(m20261122_000004_create_refresh_tokens::create_indexes());
        indexes.extend(m20261122_000006_create_access_log::create_indexes());
        indexes
    }

    fn render<B: SchemaBuilder>(builder: impl Fn() -> B) -> String {
        let mut sql: Vec<String> = all_tables().iter().map(|t| t.build(builder())).collect();
        sql.extend(all_indexes().iter().map(|i| i.build(builder())));
        sql.join(";\n")
    }

    #[test]
    fn postgres_column_types() {
        let sql = render(|| PostgresQueryBuilder);
        assert!(
            sql.contains(r#""id" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL PRIMARY KEY"#),
            "{sql}"
        );
        assert!(sql.contains(r#""private_key" bytea NOT NULL"#), "{sql}");
        assert!(sql.contains(r#""public_key" bytea NOT NULL"#), "{sql}");
        assert!(
            sql.contains(r#""rate_per_second" double precision NULL"#),
            "{sql}"
        );
        assert!(
            sql.contains(r#""created_at" timestamp with time zone NOT NULL"#),
            "{sql}"
        );
        assert!(sql.contains("ON DELETE CASCADE"), "{sql}");
        assert_eq!(sql.matches("FOREIGN KEY").count(), 3, "{sql}");
    }

    #[test]
    fn sqlite_column_types() {
        let sql = render(|| SqliteQueryBuilder);
        assert!(
            sql.contains(r#""id" integer NOT NULL PRIMARY KEY AUTOINCREMENT"#),
            "{sql}"
        );
        assert!(sql.contains(r#""private_key" blob NOT NULL"#), "{sql}");
        assert!(sql.contains(r#""rate_per_second" double NULL"#), "{sql}");
    }
}
