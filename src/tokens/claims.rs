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
    /// RFC 9449 §6.1: the key a DPoP-bound token is bound to; absent for a Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation: the RFC 7638 SHA-256 thumbprint of the holder's public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}
