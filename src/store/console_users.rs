//! Console accounts (issue 13): people on the security team, by e-mail address, with an argon2
//! password hash. The console's sign-in pages build on these.

use super::{Store, StoreError, map_insert_error};
use crate::domain::Email;
use chrono::{DateTime, Utc};
use entity::console_users;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleUser {
    pub id: String,
    pub email: Email,
    pub password_hash: String,
    /// False while the password is the one-time one: the first sign-in must replace it.
    pub password_set: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Set for accounts that sign in through the workforce OpenID provider.
    pub oidc: Option<OidcIdentity>,
}

/// Who a person is at an OpenID provider: its issuer and their subject there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    pub issuer: String,
    pub subject: String,
}

/// The password hash of an account made by a sign-in at the provider: not a PHC string, so no
/// password ever matches it.
pub const NO_PASSWORD: &str = "!oidc";

impl TryFrom<console_users::Model> for ConsoleUser {
    type Error = StoreError;

    fn try_from(m: console_users::Model) -> Result<Self, StoreError> {
        Ok(Self {
            email: Email::parse(&m.email).map_err(StoreError::corrupt)?,
            id: m.id,
            password_hash: m.password_hash,
            password_set: m.password_set,
            created_at: m.created_at,
            disabled_at: m.disabled_at,
            oidc: match (m.oidc_issuer, m.oidc_subject) {
                (Some(issuer), Some(subject)) => Some(OidcIdentity { issuer, subject }),
                _ => None,
            },
        })
    }
}

impl Store {
    /// A new account whose password is the one-time one hashed here; an address that has an
    /// account already is a `Conflict`.
    pub async fn insert_console_user(
        &self,
        email: &Email,
        one_time_password_hash: String,
        now: DateTime<Utc>,
    ) -> Result<ConsoleUser, StoreError> {
        console_users::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            email: Set(email.as_str().to_owned()),
            password_hash: Set(one_time_password_hash),
            password_set: Set(false),
            created_at: Set(now),
            disabled_at: Set(None),
            oidc_issuer: Set(None),
            oidc_subject: Set(None),
        }
        .insert(&self.db)
        .await
        .map_err(|e| map_insert_error(e, &format!("a console user {email}")))?
        .try_into()
    }

    /// A new account for a person the workforce provider vouched for: no password. An
    /// address or identity that has an account already is a `Conflict`.
    pub async fn insert_oidc_console_user(
        &self,
        email: &Email,
        identity: &OidcIdentity,
        now: DateTime<Utc>,
    ) -> Result<ConsoleUser, StoreError> {
        console_users::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            email: Set(email.as_str().to_owned()),
            password_hash: Set(NO_PASSWORD.to_owned()),
            password_set: Set(true),
            created_at: Set(now),
            disabled_at: Set(None),
            oidc_issuer: Set(Some(identity.issuer.clone())),
            oidc_subject: Set(Some(identity.subject.clone())),
        }
        .insert(&self.db)
        .await
        .map_err(|e| map_insert_error(e, &format!("a console user {email}")))?
        .try_into()
    }

    pub async fn console_user_by_oidc(
        &self,
        identity: &OidcIdentity,
    ) -> Result<Option<ConsoleUser>, StoreError> {
        console_users::Entity::find()
            .filter(console_users::Column::OidcIssuer.eq(identity.issuer.as_str()))
            .filter(console_users::Column::OidcSubject.eq(identity.subject.as_str()))
            .one(&self.db)
            .await?
            .map(ConsoleUser::try_from)
            .transpose()
    }

    /// Ties an enabled account that has no provider identity yet to one; false otherwise
    /// (already tied, disabled, gone). A `Conflict` when another account has that identity.
    pub async fn link_console_user_oidc(
        &self,
        id: &str,
        identity: &OidcIdentity,
    ) -> Result<bool, StoreError> {
        let result = console_users::Entity::update_many()
            .col_expr(
                console_users::Column::OidcIssuer,
                Expr::value(identity.issuer.clone()),
            )
            .col_expr(
                console_users::Column::OidcSubject,
                Expr::value(identity.subject.clone()),
            )
            .filter(console_users::Column::Id.eq(id))
            .filter(console_users::Column::OidcSubject.is_null())
            .filter(console_users::Column::DisabledAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| map_insert_error(e, "a console user with this provider identity"))?;
        Ok(result.rows_affected == 1)
    }

    pub async fn console_user(&self, id: &str) -> Result<Option<ConsoleUser>, StoreError> {
        console_users::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(ConsoleUser::try_from)
            .transpose()
    }

    /// Replaces the password (the one-time one, or a real one) with a real one; false when the
    /// account is gone or disabled, or its password is no longer `replaced_hash` (changed by
    /// another session since this one checked it).
    pub async fn set_console_password(
        &self,
        id: &str,
        replaced_hash: &str,
        password_hash: String,
    ) -> Result<bool, StoreError> {
        let result = console_users::Entity::update_many()
            .col_expr(
                console_users::Column::PasswordHash,
                Expr::value(password_hash),
            )
            .col_expr(console_users::Column::PasswordSet, Expr::value(true))
            .filter(console_users::Column::Id.eq(id))
            .filter(console_users::Column::PasswordHash.eq(replaced_hash))
            .filter(console_users::Column::DisabledAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Gives an account a new one-time password (the demo prints a fresh one on every start).
    pub async fn reset_console_password(
        &self,
        id: &str,
        one_time_password_hash: String,
    ) -> Result<(), StoreError> {
        console_users::Entity::update_many()
            .col_expr(
                console_users::Column::PasswordHash,
                Expr::value(one_time_password_hash),
            )
            .col_expr(console_users::Column::PasswordSet, Expr::value(false))
            .filter(console_users::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn console_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<ConsoleUser>, StoreError> {
        console_users::Entity::find()
            .filter(console_users::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await?
            .map(ConsoleUser::try_from)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn provider_accounts_are_found_by_issuer_and_subject_and_have_no_password() {
        let (store, _dir) = testing::store().await;
        let ana = OidcIdentity {
            issuer: "https://login.harmony.example".into(),
            subject: "ana-1".into(),
        };
        let email = Email::parse("ana@harmony.example").unwrap();
        let user = store
            .insert_oidc_console_user(&email, &ana, Utc::now())
            .await
            .unwrap();
        assert_eq!(user.oidc.as_ref(), Some(&ana));
        assert!(user.password_set, "nothing to set");
        assert!(!crate::secrets::password_matches("", &user.password_hash));
        assert_eq!(store.console_user_by_oidc(&ana).await.unwrap(), Some(user));
        let other_issuer = OidcIdentity {
            issuer: "https://elsewhere.example".into(),
            subject: "ana-1".into(),
        };
        assert_eq!(
            store.console_user_by_oidc(&other_issuer).await.unwrap(),
            None
        );
        let again = store
            .insert_oidc_console_user(
                &Email::parse("x@harmony.example").unwrap(),
                &ana,
                Utc::now(),
            )
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

        // A password account is tied once, and never to an identity another account has.
        let bo = Email::parse("bo@harmony.example").unwrap();
        let password_user = store
            .insert_console_user(&bo, "$argon2id$hash".into(), Utc::now())
            .await
            .unwrap();
        let taken = store.link_console_user_oidc(&password_user.id, &ana).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        let bo_identity = OidcIdentity {
            issuer: ana.issuer.clone(),
            subject: "bo-2".into(),
        };
        assert!(
            store
                .link_console_user_oidc(&password_user.id, &bo_identity)
                .await
                .unwrap()
        );
        assert!(
            !store
                .link_console_user_oidc(&password_user.id, &other_issuer)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn one_account_per_address_with_its_one_time_password_pending() {
        let (store, _dir) = testing::store().await;
        let email = Email::parse("Ana@Harmony.Example").unwrap();
        let user = store
            .insert_console_user(&email, "$argon2id$hash".into(), Utc::now())
            .await
            .unwrap();
        assert!(!user.password_set);
        assert_eq!(
            store.console_user_by_email(&email).await.unwrap(),
            Some(user)
        );
        let again = store
            .insert_console_user(&email, "$argon2id$other".into(), Utc::now())
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let nobody = Email::parse("nobody@harmony.example").unwrap();
        assert_eq!(store.console_user_by_email(&nobody).await.unwrap(), None);
    }
}
