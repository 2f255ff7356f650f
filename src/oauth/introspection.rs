//! RFC 7662. A client may introspect only its own tokens; anything else is `active: false`.
//! A token of a revoked or expired grant, or of a suspended partner, is inactive.

use super::form::Form;
use super::grants;
use crate::app::App;
use crate::error::OAuthError;
use crate::secrets::token_hash;
use crate::store::{Partner, PartnerStatus};
use crate::tokens::Confirmation;
use serde::Serialize;

/// RFC 7662 §2.2. Only `active` is present for an inactive token.
#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// RFC 9449 §6.2: the key a DPoP-bound token (access or refresh) is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cnf: Option<Confirmation>,
}

pub async fn introspect(
    app: &App,
    partner: &Partner,
    form: &Form,
) -> Result<Introspection, OAuthError> {
    let token = form.require("token")?;
    if let Ok(claims) = app.verifier.verify(token, app.clock.now()) {
        // The grant first: when shared state has lost its status, asking the database puts
        // the grant's revoked tokens back before the token's own marker is looked at.
        let active = claims.client_id == partner.client_id
            && grants::is_active(app, claims.grant_id).await?
            && !app.state.is_jti_revoked(&claims.jti).await?
            && partner.status == PartnerStatus::Active;
        if !active {
            return Ok(Introspection::default());
        }
        return Ok(Introspection {
            active: true,
            scope: Some(claims.scope.to_string()),
            client_id: Some(claims.client_id.to_string()),
            sub: Some(claims.sub),
            grant_id: Some(claims.grant_id.to_string()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            token_type: Some("access_token"),
            cnf: claims.cnf,
        });
    }
    let Some(record) = app.store.refresh_token(&token_hash(token)).await? else {
        return Ok(Introspection::default());
    };
    let Some(grant) = app.store.grant(record.grant_id).await? else {
        return Ok(Introspection::default());
    };
    let now = app.clock.now();
    let active = grant.client_id == partner.client_id
        && record.used_at.is_none()
        && record.revoked_at.is_none()
        && record.expires_at > now
        && grant.is_usable_at(now)
        && grants::is_active(app, grant.id).await?;
    if !active {
        return Ok(Introspection::default());
    }
    Ok(Introspection {
        active: true,
        scope: Some(grant.scopes.to_string()),
        client_id: Some(grant.client_id.to_string()),
        sub: Some(crate::domain::pairwise_subject(
            &grant.client_id,
            &grant.customer_id,
        )),
        grant_id: Some(grant.id.to_string()),
        exp: Some(record.expires_at.timestamp()),
        iat: None,
        iss: Some(app.issuer()),
        aud: None,
        token_type: Some("refresh_token"),
        cnf: record.jkt.map(|jkt| Confirmation { jkt }),
    })
}
