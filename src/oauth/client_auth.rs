//! Client authentication at the token, revocation, introspection and pushed authorization
//! request endpoints, in one place: `client_secret_basic` and `client_secret_post` (RFC 6749
//! §2.3.1) for partners registered with a secret, `private_key_jwt` (RFC 7523 §2.2; see
//! `client_assertion.rs`) for partners registered with keys. Exactly one method per request,
//! and only the partner's own: a secret from a partner with keys, or an assertion from a
//! partner with a secret, is `invalid_client`.

use super::client_assertion::{self, ASSERTION_TYPE};
use super::form::Form;
use crate::app::App;
use crate::domain::ClientId;
use crate::error::OAuthError;
use crate::secrets::{token_hash, token_matches};
use crate::store::{Partner, PartnerStatus};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The credentials a request presents, not yet checked.
pub struct ClientCredentials(Method);

enum Method {
    Secret {
        client_id: String,
        secret: String,
        basic: bool,
    },
    Assertion {
        assertion: String,
        /// The form's `client_id`, optional with an assertion (RFC 7521 §4.2).
        client_id: Option<String>,
    },
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
        let assertion_type = form.get("client_assertion_type");
        let assertion = form.get("client_assertion");
        if assertion_type.is_some() || assertion.is_some() {
            if authorization.is_some() || in_form {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            let (Some(assertion_type), Some(assertion)) = (assertion_type, assertion) else {
                return Err(OAuthError::invalid_request(
                    "client_assertion and client_assertion_type go together",
                ));
            };
            if assertion_type != ASSERTION_TYPE {
                tracing::warn!("a client assertion of an unsupported type");
                return Err(OAuthError::invalid_client(false));
            }
            return Ok(Self(Method::Assertion {
                assertion: assertion.to_owned(),
                client_id: form.get("client_id").map(str::to_owned),
            }));
        }
        match authorization {
            Some(value) => {
                if in_form {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method, not two",
                    ));
                }
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let encoded = value
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                    .map(|(_, rest)| rest)
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
                Ok(Self(Method::Secret {
                    client_id,
                    secret: form_decode(secret),
                    basic: true,
                }))
            }
            None => Ok(Self(Method::Secret {
                client_id: form
                    .get("client_id")
                    .ok_or_else(|| OAuthError::invalid_client(false))?
                    .to_owned(),
                secret: form
                    .get("client_secret")
                    .ok_or_else(|| OAuthError::invalid_client(false))?
                    .to_owned(),
                basic: false,
            })),
        }
    }

    /// The partner, if the credentials are right, of the kind it registered, and the partner is
    /// not suspended.
    pub async fn authenticate(self, app: &App) -> Result<Partner, OAuthError> {
        match self.0 {
            Method::Secret {
                client_id,
                secret,
                basic,
            } => authenticate_secret(app, &client_id, &secret, basic).await,
            Method::Assertion {
                assertion,
                client_id,
            } => client_assertion::authenticate(app, &assertion, client_id.as_deref()).await,
        }
    }
}

async fn authenticate_secret(
    app: &App,
    client_id: &str,
    secret: &str,
    basic: bool,
) -> Result<Partner, OAuthError> {
    let fail = || OAuthError::invalid_client(basic);
    let Ok(client_id) = ClientId::parse(client_id) else {
        return Err(fail());
    };
    let Some(partner) = app.store.partner(&client_id).await? else {
        // Hash anyway, so unknown and known clients take the same time.
        let _ = token_hash(secret);
        return Err(fail());
    };
    let secret_matches = token_matches(secret, &partner.secret_hash);
    // Its stored hash is of a secret nobody was shown; refused by name all the same, so the
    // log says what happened.
    if partner.keys.is_some() {
        tracing::warn!(client_id = %client_id, "a partner registered for private_key_jwt sent a client secret");
        return Err(fail());
    }
    if !secret_matches {
        tracing::warn!(client_id = %client_id, "client authentication failed");
        return Err(fail());
    }
    if partner.status != PartnerStatus::Active {
        tracing::warn!(client_id = %client_id, "suspended partner tried to authenticate");
        return Err(fail());
    }
    Ok(partner)
}
