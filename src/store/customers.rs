use super::{Store, StoreError, map_insert_error};
use crate::domain::{CustomerId, UpstreamCustomerId};
use chrono::{DateTime, Utc};
use entity::customers;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: CustomerId,
    pub upstream_id: UpstreamCustomerId,
    pub email: String,
    pub password_hash: String,
}

impl TryFrom<customers::Model> for Customer {
    type Error = StoreError;

    fn try_from(m: customers::Model) -> Result<Self, StoreError> {
        Ok(Self {
            id: CustomerId::parse(&m.id).map_err(StoreError::corrupt)?,
            upstream_id: UpstreamCustomerId::parse(&m.upstream_id).map_err(StoreError::corrupt)?,
            email: m.email,
            password_hash: m.password_hash,
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

    pub async fn customer_by_email(&self, email: &str) -> Result<Option<Customer>, StoreError> {
        customers::Entity::find()
            .filter(customers::Column::Email.eq(normalise_email(email)))
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
}
