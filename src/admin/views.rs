//! What the admin API shows of partners and grants.

use crate::app::App;
use crate::domain::CustomerId;
use crate::error::Internal;
use crate::store::{Grant, GrantState, Partner, PartnerStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct RateView {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    pub grant_per_second: Option<f64>,
    pub grant_burst: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerView {
    pub client_id: String,
    pub name: String,
    /// `active` or `suspended`.
    pub status: &'static str,
    /// The most it may ever request.
    pub fields: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// Overrides of the configured defaults; null = the default.
    pub rate_limits: RateView,
    pub created_at: DateTime<Utc>,
}

impl From<Partner> for PartnerView {
    fn from(p: Partner) -> Self {
        Self {
            client_id: p.client_id.to_string(),
            name: p.name,
            status: match p.status {
                PartnerStatus::Active => "active",
                PartnerStatus::Suspended => "suspended",
            },
            fields: p.fields.iter().map(ToString::to_string).collect(),
            redirect_uris: p.redirect_uris,
            rate_limits: RateView {
                per_second: p.rates.per_second,
                burst: p.rates.burst,
                grant_per_second: p.rates.grant_per_second,
                grant_burst: p.rates.grant_burst,
            },
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    pub client_id: String,
    /// The insurer's customer id.
    pub customer_id: Option<String>,
    pub scopes: Vec<String>,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `customer`, `security_team`, `partner`, `refresh_token_reuse` or `code_reuse`.
    pub revoked_by: Option<&'static str>,
}

/// Views of grants, with the insurer's customer ids looked up in one query.
pub async fn grant_views(app: &App, grants: Vec<Grant>) -> Result<Vec<GrantView>, Internal> {
    let ids: Vec<CustomerId> = grants.iter().map(|g| g.customer_id).collect();
    let customers = app.store.customers(&ids).await?;
    let now = app.clock.now();
    Ok(grants
        .into_iter()
        .map(|g| {
            let (status, revoked_at, revoked_by) = match g.state {
                GrantState::Revoked { at, by } => ("revoked", Some(at), Some(by.as_str())),
                GrantState::Active if g.expires_at <= now => ("expired", None, None),
                GrantState::Active => ("active", None, None),
            };
            GrantView {
                id: g.id.to_string(),
                client_id: g.client_id.to_string(),
                customer_id: customers
                    .get(&g.customer_id)
                    .map(|c| c.upstream_id.to_string()),
                scopes: g.scopes.iter().map(ToString::to_string).collect(),
                status,
                created_at: g.created_at,
                expires_at: g.expires_at,
                revoked_at,
                revoked_by,
            }
        })
        .collect())
}
