//! Client authentication at the token, revocation and introspection endpoints:
//! `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1), never both at once.

use super::form::Form;
use crate::app::App;
use crate::domain::ClientId;
use crate::error::OAuthError;
use crate::secrets::{token_hash, token_matches};
use crate::store::{Partner, PartnerStatus};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub struct ClientCredentials {
    client_id: String,
    secret: String,
    basic: bool,
}

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

impl ClientCredentials {
    /// Reads the credentials from the `Authorization` header or the form.
    pub fn extract(authorization: Option<&str>, form: &Form) -> Result<Self, OAuthError> {
        let in_form = form.get("client_secret").is_some();
        match authorization {
            Some(value) => {
                if in_form {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method, not two",
                    ));
                }
                let encoded = value
                    .strip_prefix("Basic ")
                    .ok_or_else(|| OAuthError::invalid_client(true))?;
                let decoded = STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| OAuthError::invalid_client(true))?;
                let (id, secret) = decoded
                    .split_once(':')
                    .ok_or_else(|| OAuthError::invalid_client(true))?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                let client_id = form_decode(id);
                if form.get("client_id").is_some_and(|f| f != client_id) {
                    return Err(OAuthError::invalid_request("client_id does not match"));
                }
                Ok(Self {
                    client_id,
                    secret: form_decode(secret),
                    basic: true,
                })
            }
            None => Ok(Self {
                client_id: form
                    .get("client_id")
                    .ok_or_else(|| OAuthError::invalid_client(false))?
                    .to_owned(),
                secret: form
                    .get("client_secret")
                    .ok_or_else(|| OAuthError::invalid_client(false))?
                    .to_owned(),
                basic: false,
            }),
        }
    }

    /// The partner, if the secret is right and the partner is not suspended.
    pub async fn authenticate(self, app: &App) -> Result<Partner, OAuthError> {
        let fail = || OAuthError::invalid_client(self.basic);
        let Ok(client_id) = ClientId::parse(&self.client_id) else {
            return Err(fail());
        };
        let Some(partner) = app.store.partner(&client_id).await? else {
            // Hash anyway, so unknown and known clients take the same time.
            let _ = token_hash(&self.secret);
            return Err(fail());
        };
        if !token_matches(&self.secret, &partner.secret_hash) {
            tracing::warn!(client_id = %client_id, "client authentication failed");
            return Err(fail());
        }
        if partner.status != PartnerStatus::Active {
            tracing::warn!(client_id = %client_id, "suspended partner tried to authenticate");
            return Err(fail());
        }
        Ok(partner)
    }
}
