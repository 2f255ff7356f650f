use crate::domain::{ClientId, FieldSet, GrantId};
use serde::{Deserialize, Serialize};

/// The claims of an access token (RFC 9068 §2.2). `sub` is a pairwise pseudonym.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub client_id: ClientId,
    pub grant_id: GrantId,
    pub scope: FieldSet,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}
