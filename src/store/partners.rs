use super::{Store, StoreError, map_insert_error};
use crate::domain::{ClientId, FieldSet};
use chrono::{DateTime, Utc};
use entity::partners;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter,
    QueryOrder, sea_query::Expr,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerStatus {
    Active,
    Suspended,
}

impl PartnerStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            other => Err(StoreError::corrupt(format!("partner status `{other}`"))),
        }
    }
}

/// Per-partner overrides of the `[rate_limits]` defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartnerRates {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    pub grant_per_second: Option<f64>,
    pub grant_burst: Option<u32>,
}

/// Where a partner that authenticates with `private_key_jwt` (RFC 7523) keeps its public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerKeys {
    /// Fetched from this `https` URI, cached, refetched on an unknown `kid`.
    Uri(url::Url),
    /// Registered with the partner (`--jwks-file`): the JWKS as JSON text.
    Set(String),
}

/// The FAPI 2.0 requirements a partner was registered with (beyond the global ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FapiRequirements {
    /// Authorization requests must come through `POST /oauth/par`.
    pub require_par: bool,
    /// Every token must be DPoP-bound.
    pub require_dpop: bool,
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub client_id: ClientId,
    pub name: String,
    pub secret_hash: String,
    pub redirect_uris: Vec<String>,
    /// The most this partner may ever request.
    pub fields: FieldSet,
    pub rates: PartnerRates,
    pub status: PartnerStatus,
    pub created_at: DateTime<Utc>,
    pub status_changed_at: Option<DateTime<Utc>>,
    /// `Some`: the partner authenticates with `private_key_jwt` only, never with a secret.
    pub keys: Option<PartnerKeys>,
    pub fapi: FapiRequirements,
}

pub struct NewPartner {
    pub client_id: ClientId,
    pub name: String,
    /// For a partner with `keys`, the hash of a secret nobody was shown.
    pub secret_hash: String,
    pub redirect_uris: Vec<String>,
    pub fields: FieldSet,
    pub rates: PartnerRates,
    pub keys: Option<PartnerKeys>,
    pub fapi: FapiRequirements,
}

fn to_u32(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

fn to_i32(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

impl TryFrom<partners::Model> for Partner {
    type Error = StoreError;

    fn try_from(m: partners::Model) -> Result<Self, StoreError> {
        Ok(Self {
            client_id: ClientId::parse(&m.client_id).map_err(StoreError::corrupt)?,
            redirect_uris: serde_json::from_str(&m.redirect_uris).map_err(StoreError::corrupt)?,
            fields: FieldSet::parse(&m.fields).map_err(StoreError::corrupt)?,
            rates: PartnerRates {
                per_second: m.rate_per_second,
                burst: to_u32(m.rate_burst),
                grant_per_second: m.grant_rate_per_second,
                grant_burst: to_u32(m.grant_burst),
            },
            status: PartnerStatus::parse(&m.status)?,
            name: m.name,
            secret_hash: m.secret_hash,
            created_at: m.created_at,
            status_changed_at: m.status_changed_at,
            keys: match (m.jwks_uri, m.jwks) {
                (None, None) => None,
                (Some(uri), None) => Some(PartnerKeys::Uri(
                    url::Url::parse(&uri).map_err(StoreError::corrupt)?,
                )),
                (None, Some(set)) => Some(PartnerKeys::Set(set)),
                (Some(_), Some(_)) => {
                    return Err(StoreError::corrupt("a partner with both jwks_uri and jwks"));
                }
            },
            fapi: FapiRequirements {
                require_par: m.require_par,
                require_dpop: m.require_dpop,
            },
        })
    }
}

impl Store {
    pub async fn insert_partner(
        &self,
        new: NewPartner,
        now: DateTime<Utc>,
    ) -> Result<Partner, StoreError> {
        let model = partners::ActiveModel {
            client_id: Set(new.client_id.to_string()),
            name: Set(new.name),
            secret_hash: Set(new.secret_hash),
            redirect_uris: Set(
                serde_json::to_string(&new.redirect_uris).map_err(StoreError::corrupt)?
            ),
            fields: Set(new.fields.to_string()),
            rate_per_second: Set(new.rates.per_second),
            rate_burst: Set(to_i32(new.rates.burst)),
            grant_rate_per_second: Set(new.rates.grant_per_second),
            grant_burst: Set(to_i32(new.rates.grant_burst)),
            status: Set(PartnerStatus::Active.as_str().to_owned()),
            created_at: Set(now),
            status_changed_at: Set(None),
            require_par: Set(new.fapi.require_par),
            require_dpop: Set(new.fapi.require_dpop),
            jwks_uri: Set(match &new.keys {
                Some(PartnerKeys::Uri(uri)) => Some(uri.to_string()),
                _ => None,
            }),
            jwks: Set(match new.keys {
                Some(PartnerKeys::Set(set)) => Some(set),
                _ => None,
            }),
        };
        let what = format!("partner {}", new.client_id);
        model
            .insert(&self.db)
            .await
            .map_err(|e| map_insert_error(e, &what))?
            .try_into()
    }

    pub async fn partner(&self, client_id: &ClientId) -> Result<Option<Partner>, StoreError> {
        partners::Entity::find_by_id(client_id.to_string())
            .one(&self.db)
            .await?
            .map(Partner::try_from)
            .transpose()
    }

    pub async fn partners(&self) -> Result<Vec<Partner>, StoreError> {
        partners::Entity::find()
            .order_by_asc(partners::Column::ClientId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Partner::try_from)
            .collect()
    }

    pub async fn set_partner_secret_hash(
        &self,
        client_id: &ClientId,
        secret_hash: String,
    ) -> Result<(), StoreError> {
        let model = partners::ActiveModel {
            client_id: Set(client_id.to_string()),
            secret_hash: Set(secret_hash),
            ..Default::default()
        };
        model.update(&self.db).await?;
        Ok(())
    }

    pub async fn set_partner_status(
        &self,
        client_id: &ClientId,
        status: PartnerStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let model = partners::ActiveModel {
            client_id: Set(client_id.to_string()),
            status: Set(status.as_str().to_owned()),
            status_changed_at: Set(Some(now)),
            ..Default::default()
        };
        model.update(&self.db).await?;
        Ok(())
    }

    /// Suspends an active partner unless its status changed after `unchanged_since` (a person
    /// reinstated it): one conditional update, so a reinstatement racing an automatic
    /// suspension is never overwritten. Returns whether it was suspended.
    pub async fn suspend_partner_unless_changed(
        &self,
        client_id: &ClientId,
        unchanged_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = partners::Entity::update_many()
            .col_expr(
                partners::Column::Status,
                Expr::value(PartnerStatus::Suspended.as_str()),
            )
            .col_expr(partners::Column::StatusChangedAt, Expr::value(now))
            .filter(partners::Column::ClientId.eq(client_id.as_str()))
            .filter(partners::Column::Status.eq(PartnerStatus::Active.as_str()))
            .filter(
                Condition::any()
                    .add(partners::Column::StatusChangedAt.is_null())
                    .add(partners::Column::StatusChangedAt.lte(unchanged_since)),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use chrono::Duration;

    #[tokio::test]
    async fn an_automatic_suspension_never_overwrites_a_later_reinstatement() {
        let (store, _dir) = testing::any_store().await;
        let client = ClientId::parse("fone-shop").unwrap();
        let t0 = Utc::now();
        store
            .insert_partner(
                NewPartner {
                    client_id: client.clone(),
                    name: "Fone Shop".into(),
                    secret_hash: String::new(),
                    redirect_uris: vec![],
                    fields: FieldSet::parse("claims:status").unwrap(),
                    rates: PartnerRates::default(),
                    keys: None,
                    fapi: FapiRequirements::default(),
                },
                t0,
            )
            .await
            .unwrap();
        let window_from = t0 + Duration::seconds(1);
        // An alert over a window from t0+1 s: the first run contains it, a second does nothing.
        let at = t0 + Duration::seconds(2);
        assert!(
            store
                .suspend_partner_unless_changed(&client, window_from, at)
                .await
                .unwrap()
        );
        assert!(
            !store
                .suspend_partner_unless_changed(&client, window_from, at)
                .await
                .unwrap()
        );
        // A person reinstates it; the evaluation already under way, decided on the same window,
        // must leave it active (it used to read the partner first and then write, unconditionally).
        store
            .set_partner_status(&client, PartnerStatus::Active, t0 + Duration::seconds(3))
            .await
            .unwrap();
        let later = t0 + Duration::seconds(4);
        assert!(
            !store
                .suspend_partner_unless_changed(&client, window_from, later)
                .await
                .unwrap()
        );
        let partner = store.partner(&client).await.unwrap().unwrap();
        assert_eq!(partner.status, PartnerStatus::Active);
        // Once the window has moved past the reinstatement, new calls may contain it again.
        let next_window = t0 + Duration::seconds(5);
        assert!(
            store
                .suspend_partner_unless_changed(&client, next_window, later)
                .await
                .unwrap()
        );
    }
}
