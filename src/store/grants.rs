use super::{Store, StoreError};
use crate::domain::{ClientId, CustomerId, FieldSet, GrantId};
use chrono::{DateTime, Utc};
use entity::{grants, refresh_tokens};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
};

/// Who ended a grant; the portal tells the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    Customer,
    SecurityTeam,
    Partner,
    /// A spent refresh token was presented again: the chain may be stolen.
    RefreshTokenReuse,
    /// An authorization code was presented twice.
    CodeReuse,
}

impl RevokedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::SecurityTeam => "security_team",
            Self::Partner => "partner",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::CodeReuse => "code_reuse",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "customer" => Self::Customer,
            "security_team" => Self::SecurityTeam,
            "partner" => Self::Partner,
            "refresh_token_reuse" => Self::RefreshTokenReuse,
            "code_reuse" => Self::CodeReuse,
            other => return Err(StoreError::corrupt(format!("revoked_by `{other}`"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    Active,
    Revoked { at: DateTime<Utc>, by: RevokedBy },
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub id: GrantId,
    pub customer_id: CustomerId,
    pub client_id: ClientId,
    pub scopes: FieldSet,
    pub state: GrantState,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// When its authorization code was spent: the database, not shared state, decides.
    pub code_redeemed_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// Active and not yet expired: the only state in which anything may be issued or read.
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.state == GrantState::Active && self.expires_at > now
    }
}

impl TryFrom<grants::Model> for Grant {
    type Error = StoreError;

    fn try_from(m: grants::Model) -> Result<Self, StoreError> {
        let state = match (m.status.as_str(), m.revoked_at, m.revoked_by.as_deref()) {
            ("active", None, None) => GrantState::Active,
            ("revoked", Some(at), Some(by)) => GrantState::Revoked {
                at,
                by: RevokedBy::parse(by)?,
            },
            _ => return Err(StoreError::corrupt(format!("grant {} status", m.id))),
        };
        Ok(Self {
            id: GrantId::parse(&m.id).map_err(StoreError::corrupt)?,
            customer_id: CustomerId::parse(&m.customer_id).map_err(StoreError::corrupt)?,
            client_id: ClientId::parse(&m.client_id).map_err(StoreError::corrupt)?,
            scopes: FieldSet::parse(&m.scopes).map_err(StoreError::corrupt)?,
            state,
            created_at: m.created_at,
            expires_at: m.expires_at,
            last_used_at: m.last_used_at,
            code_redeemed_at: m.code_redeemed_at,
        })
    }
}

impl Store {
    pub async fn insert_grant(
        &self,
        customer_id: CustomerId,
        client_id: &ClientId,
        scopes: &FieldSet,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Grant, StoreError> {
        let model = grants::ActiveModel {
            id: Set(GrantId::random().to_string()),
            customer_id: Set(customer_id.to_string()),
            client_id: Set(client_id.to_string()),
            scopes: Set(scopes.to_string()),
            status: Set("active".to_owned()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            revoked_by: Set(None),
            last_used_at: Set(None),
            code_redeemed_at: Set(None),
            code_reissue_sealed: Set(None),
            code_reissue_until: Set(None),
        };
        model.insert(&self.db).await?.try_into()
    }

    /// Spends the grant's authorization code with a conditional update: of two concurrent
    /// exchanges (on any instances) exactly one gets true. False when it was spent before.
    pub async fn spend_code(&self, grant: GrantId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = grants::Entity::update_many()
            .col_expr(grants::Column::CodeRedeemedAt, Expr::value(now))
            .filter(grants::Column::Id.eq(grant.to_string()))
            .filter(grants::Column::CodeRedeemedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Gives the code back when nothing was issued for it, so the partner's retry is a first
    /// use and not a replay. Only the spend made at `spent_at` is undone.
    pub async fn unspend_code(
        &self,
        grant: GrantId,
        spent_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        grants::Entity::update_many()
            .col_expr(
                grants::Column::CodeRedeemedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(grants::Column::Id.eq(grant.to_string()))
            .filter(grants::Column::CodeRedeemedAt.eq(spent_at))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        grants::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(Grant::try_from)
            .transpose()
    }

    /// Ends a grant and every refresh token of it, in one transaction. Returns false when the
    /// grant was not active (already revoked, or unknown), so the first reason is kept.
    pub async fn revoke_grant(
        &self,
        id: GrantId,
        by: RevokedBy,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let result = grants::Entity::update_many()
            .col_expr(grants::Column::Status, Expr::value("revoked"))
            .col_expr(grants::Column::RevokedAt, Expr::value(now))
            .col_expr(grants::Column::RevokedBy, Expr::value(by.as_str()))
            .filter(grants::Column::Id.eq(id.to_string()))
            .filter(grants::Column::Status.eq("active"))
            .exec(&txn)
            .await?;
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
            .filter(refresh_tokens::Column::GrantId.eq(id.to_string()))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        // Answers kept for retries are of no use to anyone now.
        refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::ReissueSealed,
                Expr::value(Option::<Vec<u8>>::None),
            )
            .col_expr(
                refresh_tokens::Column::ReissueUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(refresh_tokens::Column::GrantId.eq(id.to_string()))
            .filter(refresh_tokens::Column::ReissueSealed.is_not_null())
            .exec(&txn)
            .await?;
        grants::Entity::update_many()
            .col_expr(
                grants::Column::CodeReissueSealed,
                Expr::value(Option::<Vec<u8>>::None),
            )
            .col_expr(
                grants::Column::CodeReissueUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(grants::Column::Id.eq(id.to_string()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected == 1)
    }
}

/// Which grants the security team asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatusFilter {
    Active,
    Revoked,
    /// Never revoked, but past its end.
    Expired,
}

impl GrantStatusFilter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub client_id: Option<ClientId>,
    pub customer_id: Option<CustomerId>,
    pub status: Option<GrantStatusFilter>,
}

impl Store {
    /// Grants matching `filter`, newest first, after the `(created_at, id)` of the previous
    /// page's last grant.
    pub async fn search_grants(
        &self,
        filter: &GrantFilter,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, GrantId)>,
        limit: u64,
    ) -> Result<Vec<Grant>, StoreError> {
        use sea_orm::{Condition, QueryOrder, QuerySelect};
        let mut query = grants::Entity::find();
        if let Some(client) = &filter.client_id {
            query = query.filter(grants::Column::ClientId.eq(client.as_str()));
        }
        if let Some(customer) = filter.customer_id {
            query = query.filter(grants::Column::CustomerId.eq(customer.to_string()));
        }
        query = match filter.status {
            None => query,
            Some(GrantStatusFilter::Revoked) => query.filter(grants::Column::Status.eq("revoked")),
            Some(GrantStatusFilter::Active) => query
                .filter(grants::Column::Status.eq("active"))
                .filter(grants::Column::ExpiresAt.gt(now)),
            Some(GrantStatusFilter::Expired) => query
                .filter(grants::Column::Status.eq("active"))
                .filter(grants::Column::ExpiresAt.lte(now)),
        };
        if let Some((created_at, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(grants::Column::CreatedAt.lt(created_at))
                    .add(
                        Condition::all()
                            .add(grants::Column::CreatedAt.eq(created_at))
                            .add(grants::Column::Id.lt(id.to_string())),
                    ),
            );
        }
        query
            .order_by_desc(grants::Column::CreatedAt)
            .order_by_desc(grants::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Grant::try_from)
            .collect()
    }

    /// Active (unrevoked, unexpired) grants per partner, in one grouped query.
    pub async fn active_grant_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        use sea_orm::QuerySelect;
        use sea_orm::sea_query::{Expr, Func};
        let rows: Vec<(String, i64)> = grants::Entity::find()
            .select_only()
            .column(grants::Column::ClientId)
            .column_as(Expr::from(Func::count(Expr::col(grants::Column::Id))), "n")
            .filter(grants::Column::Status.eq("active"))
            .filter(grants::Column::ExpiresAt.gt(now))
            .group_by(grants::Column::ClientId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(client, n)| (client, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// A customer's grants, newest first.
    pub async fn grants_of_customer(&self, customer: CustomerId) -> Result<Vec<Grant>, StoreError> {
        use sea_orm::QueryOrder;
        grants::Entity::find()
            .filter(grants::Column::CustomerId.eq(customer.to_string()))
            .order_by_desc(grants::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Grant::try_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use crate::store::{NewPartner, PartnerRates};

    #[tokio::test]
    async fn a_grant_is_revoked_once_and_keeps_its_first_reason() {
        let (store, _dir) = store().await;
        let now = Utc::now();
        let client = ClientId::parse("fone-shop").unwrap();
        let scopes = FieldSet::parse("claims:status").unwrap();
        store
            .insert_partner(
                NewPartner {
                    client_id: client.clone(),
                    name: "Fone Shop".into(),
                    secret_hash: "x".into(),
                    keys: None,
                    fapi: Default::default(),
                    redirect_uris: vec!["https://fone.example/cb".into()],
                    fields: scopes.clone(),
                    rates: PartnerRates::default(),
                },
                now,
            )
            .await
            .unwrap();
        let customer = store
            .insert_customer(
                &crate::domain::UpstreamCustomerId::parse("CU-1").unwrap(),
                "a@example.com",
                "h".into(),
                now,
            )
            .await
            .unwrap();
        let grant = store
            .insert_grant(
                customer.id,
                &client,
                &scopes,
                now,
                now + chrono::Duration::days(1),
            )
            .await
            .unwrap();
        assert!(grant.is_usable_at(now));
        assert!(!grant.is_usable_at(now + chrono::Duration::days(2)));

        assert!(
            store
                .revoke_grant(grant.id, RevokedBy::Customer, now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_grant(grant.id, RevokedBy::SecurityTeam, now)
                .await
                .unwrap()
        );
        let stored = store.grant(grant.id).await.unwrap().unwrap();
        assert!(matches!(
            stored.state,
            GrantState::Revoked {
                by: RevokedBy::Customer,
                ..
            }
        ));
    }
}
