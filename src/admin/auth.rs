//! Admin bearer tokens: random, stored only as a hash, revocable. A partner's access token or
//! a customer's session is not an admin token and is refused like any other wrong credential.

use crate::app::App;
use crate::error::ApiError;
use crate::secrets::token_hash;

/// The token an admin call was made with: the "who" of the admin audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    pub token_id: String,
    pub name: String,
}

pub async fn authenticate(app: &App, bearer: Option<&str>) -> Result<AdminIdentity, ApiError> {
    let Some(token) = bearer else {
        return Err(ApiError::Unauthorized(
            "an admin bearer token is required".into(),
        ));
    };
    // Cheap shape check first: no database round trip for a partner JWT or random garbage.
    if !token.starts_with("kh_adm_") || token.len() > 128 {
        return Err(ApiError::InvalidToken("not an admin token".into()));
    }
    match app.store.active_admin_token(&token_hash(token)).await? {
        Some(t) => Ok(AdminIdentity {
            token_id: t.id,
            name: t.name,
        }),
        None => Err(ApiError::InvalidToken(
            "unknown or revoked admin token".into(),
        )),
    }
}
