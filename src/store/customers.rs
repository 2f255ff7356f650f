use super::{NO_PASSWORD, OidcIdentity, Store, StoreError, map_insert_error};
use crate::domain::{CustomerId, UpstreamCustomerId};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use entity::customers;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: CustomerId,
    pub upstream_id: UpstreamCustomerId,
    /// The sign-in address of a built-in account; for a customer of the OpenID provider, an
    /// opaque `oidc:` key (see [`Customer::email_address`]).
    pub email: String,
    pub password_hash: String,
    /// Set for customers who sign in through the insurer's OpenID provider.
    pub oidc: Option<OidcIdentity>,
}

impl Customer {
    /// The address a built-in account signs in with; none for a provider's customer.
    pub fn email_address(&self) -> Option<&str> {
        self.oidc.is_none().then_some(self.email.as_str())
    }
}

/// The `email` column of a provider's customer: unique per identity, and without `@`, so that
/// no built-in sign-in (which looks addresses up) can ever find it.
fn oidc_email_key(identity: &OidcIdentity) -> String {
    let digest = Sha256::digest(format!("{}\n{}", identity.issuer, identity.subject));
    format!("oidc:{}", URL_SAFE_NO_PAD.encode(&digest[..20]))
}

impl TryFrom<customers::Model> for Customer {
    type Error = StoreError;

    fn try_from(m: customers::Model) -> Result<Self, StoreError> {
        Ok(Self {
            id: CustomerId::parse(&m.id).map_err(StoreError::corrupt)?,
            upstream_id: UpstreamCustomerId::parse(&m.upstream_id).map_err(StoreError::corrupt)?,
            email: m.email,
            password_hash: m.password_hash,
            oidc: match (m.oidc_issuer, m.oidc_subject) {
                (Some(issuer), Some(subject)) => Some(OidcIdentity { issuer, subject }),
                _ => None,
            },
        })
    }
}

/// E-mail addresses compare case-insensitively for login.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    pub async fn insert_customer(
        &self,
        upstream_id: &UpstreamCustomerId,
        email: &str,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> Result<Customer, StoreError> {
        let model = customers::ActiveModel {
            id: Set(CustomerId::random().to_string()),
            upstream_id: Set(upstream_id.to_string()),
            email: Set(normalise_email(email)),
            password_hash: Set(password_hash),
            created_at: Set(now),
            oidc_issuer: Set(None),
            oidc_subject: Set(None),
        };
        let what = format!("customer {upstream_id} or {email}");
        model
            .insert(&self.db)
            .await
            .map_err(|e| map_insert_error(e, &what))?
            .try_into()
    }

    pub async fn customer(&self, id: CustomerId) -> Result<Option<Customer>, StoreError> {
        customers::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(Customer::try_from)
            .transpose()
    }

    /// Several customers at once, by id.
    pub async fn customers(
        &self,
        ids: &[CustomerId],
    ) -> Result<std::collections::HashMap<CustomerId, Customer>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        customers::Entity::find()
            .filter(customers::Column::Id.is_in(ids.iter().map(ToString::to_string)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Customer::try_from(m).map(|c| (c.id, c)))
            .collect()
    }

    /// A built-in account by its sign-in address.
    pub async fn customer_by_email(&self, email: &str) -> Result<Option<Customer>, StoreError> {
        customers::Entity::find()
            .filter(customers::Column::Email.eq(normalise_email(email)))
            .filter(customers::Column::OidcSubject.is_null())
            .one(&self.db)
            .await?
            .map(Customer::try_from)
            .transpose()
    }

    pub async fn customer_by_upstream_id(
        &self,
        upstream_id: &UpstreamCustomerId,
    ) -> Result<Option<Customer>, StoreError> {
        customers::Entity::find()
            .filter(customers::Column::UpstreamId.eq(upstream_id.to_string()))
            .one(&self.db)
            .await?
            .map(Customer::try_from)
            .transpose()
    }

    pub async fn set_customer_password(
        &self,
        id: CustomerId,
        password_hash: String,
    ) -> Result<(), StoreError> {
        let model = customers::ActiveModel {
            id: Set(id.to_string()),
            password_hash: Set(password_hash),
            ..Default::default()
        };
        model.update(&self.db).await?;
        Ok(())
    }

    /// A customer of the OpenID provider, made at their first sign-in there; `Conflict` when the
    /// upstream id or the identity has a customer already.
    pub async fn insert_oidc_customer(
        &self,
        upstream_id: &UpstreamCustomerId,
        identity: &OidcIdentity,
        now: DateTime<Utc>,
    ) -> Result<Customer, StoreError> {
        let model = customers::ActiveModel {
            id: Set(CustomerId::random().to_string()),
            upstream_id: Set(upstream_id.to_string()),
            email: Set(oidc_email_key(identity)),
            password_hash: Set(NO_PASSWORD.to_owned()),
            created_at: Set(now),
            oidc_issuer: Set(Some(identity.issuer.clone())),
            oidc_subject: Set(Some(identity.subject.clone())),
        };
        model
            .insert(&self.db)
            .await
            .map_err(|e| map_insert_error(e, &format!("customer {upstream_id}")))?
            .try_into()
    }

    pub async fn customer_by_oidc(
        &self,
        identity: &OidcIdentity,
    ) -> Result<Option<Customer>, StoreError> {
        customers::Entity::find()
            .filter(customers::Column::OidcIssuer.eq(identity.issuer.as_str()))
            .filter(customers::Column::OidcSubject.eq(identity.subject.as_str()))
            .one(&self.db)
            .await?
            .map(Customer::try_from)
            .transpose()
    }

    /// Ties a built-in account (one with no provider identity yet) to its provider identity, and
    /// ends its password; false when it has an identity already.
    pub async fn link_customer_oidc(
        &self,
        id: CustomerId,
        identity: &OidcIdentity,
    ) -> Result<bool, StoreError> {
        let result = customers::Entity::update_many()
            .col_expr(
                customers::Column::OidcIssuer,
                Expr::value(identity.issuer.clone()),
            )
            .col_expr(
                customers::Column::OidcSubject,
                Expr::value(identity.subject.clone()),
            )
            .col_expr(customers::Column::PasswordHash, Expr::value(NO_PASSWORD))
            .filter(customers::Column::Id.eq(id.to_string()))
            .filter(customers::Column::OidcSubject.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| map_insert_error(e, "a customer with this provider identity"))?;
        Ok(result.rows_affected == 1)
    }
}
