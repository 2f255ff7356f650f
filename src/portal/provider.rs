//! Which customer a sign-in at the insurer's OpenID provider (`[customer_login]`) is: found by
//! the provider's issuer and subject, made on their first sign-in, with the insurer's customer
//! id taken from the claim `customer_id_claim` names.
//!
//! A built-in account for the same customer id (one made before the provider was configured,
//! or by the demo) is taken over by the first provider identity that carries that id: the
//! provider is the insurer's own word on who the customer is, so that account's grants are
//! theirs. Once an account has an identity, another identity with the same customer id is
//! refused rather than let in beside it.

use crate::config::CustomerLogin;
use crate::domain::UpstreamCustomerId;
use crate::oidc::IdentityClaims;
use crate::store::{Customer, OidcIdentity, Store, StoreError};
use chrono::{DateTime, Utc};

/// The longest greeting kept from the ID token.
const DISPLAY_NAME_MAX: usize = 200;

/// Why a customer the provider signed in cannot use the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the ID token has no customer-id claim")]
    NoCustomerId,
    #[error("the customer-id claim is not a customer id")]
    MalformedCustomerId,
    /// Another provider identity holds this customer id already.
    #[error("another sign-in identity holds this customer id")]
    CustomerIdTaken,
    /// This identity's customer id at its first sign-in is not the one it carries now.
    #[error("the customer id changed for this identity")]
    CustomerIdChanged,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The customer the validated `claims` describe, made on their first sign-in.
pub async fn admit(
    store: &Store,
    login: &CustomerLogin,
    claims: &IdentityClaims,
    now: DateTime<Utc>,
) -> Result<Customer, AdmitError> {
    // Checked before anything is looked up or made: a token without a usable id leaves no trace.
    let upstream_id = customer_id(login, claims)?;
    let identity = OidcIdentity {
        issuer: claims.issuer().to_owned(),
        subject: claims.subject().to_owned(),
    };
    if let Some(customer) = store.customer_by_oidc(&identity).await? {
        return same_customer(customer, &upstream_id);
    }
    match store.customer_by_upstream_id(&upstream_id).await? {
        Some(existing) if existing.oidc.is_none() => {
            if !store.link_customer_oidc(existing.id, &identity).await? {
                return Err(Refused::CustomerIdTaken.into());
            }
            tracing::info!(customer = %existing.id, "built-in customer account tied to its provider identity");
            let linked = store.customer_by_oidc(&identity).await?;
            Ok(linked.ok_or(Refused::CustomerIdTaken)?)
        }
        Some(_) => Err(Refused::CustomerIdTaken.into()),
        None => match store
            .insert_oidc_customer(&upstream_id, &identity, now)
            .await
        {
            Ok(customer) => {
                tracing::info!(customer = %customer.id, "customer made at their first provider sign-in");
                Ok(customer)
            }
            // Two first sign-ins at once: the other one made it (or holds the id).
            Err(StoreError::Conflict(_)) => match store.customer_by_oidc(&identity).await? {
                Some(customer) => same_customer(customer, &upstream_id),
                None => Err(Refused::CustomerIdTaken.into()),
            },
            Err(e) => Err(e.into()),
        },
    }
}

/// The insurer's customer id from the configured claim: a string with the shape of one.
pub fn customer_id(
    login: &CustomerLogin,
    claims: &IdentityClaims,
) -> Result<UpstreamCustomerId, Refused> {
    let raw = match claims.claim(&login.customer_id_claim) {
        None | Some(serde_json::Value::Null) => return Err(Refused::NoCustomerId),
        Some(value) => value.as_str().ok_or(Refused::MalformedCustomerId)?,
    };
    UpstreamCustomerId::parse(raw).map_err(|_| Refused::MalformedCustomerId)
}

fn same_customer(
    customer: Customer,
    upstream_id: &UpstreamCustomerId,
) -> Result<Customer, AdmitError> {
    if &customer.upstream_id == upstream_id {
        Ok(customer)
    } else {
        // A provider that re-numbers its customers must not move one person's grants (and the
        // history of their claim) to another customer id silently.
        Err(Refused::CustomerIdChanged.into())
    }
}

/// How the portal greets the customer: `name`, else `email`, bounded; never required.
pub fn display_name(claims: &IdentityClaims) -> Option<String> {
    ["name", "email"]
        .iter()
        .filter_map(|claim| claims.string(claim))
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(DISPLAY_NAME_MAX)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;
    use crate::store::testing;
    use serde_json::{Value, json};

    fn login() -> CustomerLogin {
        CustomerLogin {
            issuer: "https://id.harmony.example".into(),
            client_id: "keyhole".into(),
            client_secret: Secret::new("s".into()),
            scopes: "openid profile".into(),
            reauthenticate_after_minutes: 10,
            customer_id_claim: "harmony_customer_id".into(),
        }
    }

    fn claims(subject: &str, extra: Value) -> IdentityClaims {
        IdentityClaims {
            issuer: "https://id.harmony.example".into(),
            subject: subject.into(),
            auth_time: None,
            all: extra.as_object().cloned().unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn a_first_sign_in_makes_the_customer_and_the_next_finds_it() {
        let (store, _dir) = testing::store().await;
        let c = claims("carla", json!({"harmony_customer_id": "CU-1001"}));
        let made = admit(&store, &login(), &c, Utc::now()).await.unwrap();
        assert_eq!(made.upstream_id.as_str(), "CU-1001");
        assert_eq!(made.email_address(), None, "no sign-in address");
        let again = admit(&store, &login(), &c, Utc::now()).await.unwrap();
        assert_eq!(again.id, made.id);
    }

    #[tokio::test]
    async fn a_missing_or_malformed_customer_id_is_refused_and_makes_nothing() {
        let (store, _dir) = testing::store().await;
        for (extra, refused) in [
            (json!({}), Refused::NoCustomerId),
            (json!({"harmony_customer_id": null}), Refused::NoCustomerId),
            (
                json!({"harmony_customer_id": 1001}),
                Refused::MalformedCustomerId,
            ),
            (
                json!({"harmony_customer_id": "CU 1001"}),
                Refused::MalformedCustomerId,
            ),
            (
                json!({"harmony_customer_id": ""}),
                Refused::MalformedCustomerId,
            ),
            (
                json!({"harmony_customer_id": ["CU-1001"]}),
                Refused::MalformedCustomerId,
            ),
        ] {
            let err = admit(&store, &login(), &claims("x", extra.clone()), Utc::now())
                .await
                .unwrap_err();
            assert!(
                matches!(err, AdmitError::Refused(r) if r == refused),
                "{extra}"
            );
        }
        let identity = OidcIdentity {
            issuer: "https://id.harmony.example".into(),
            subject: "x".into(),
        };
        assert!(store.customer_by_oidc(&identity).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_built_in_account_is_taken_over_once_and_its_password_ends() {
        let (store, _dir) = testing::store().await;
        let upstream = UpstreamCustomerId::parse("CU-1001").unwrap();
        let hash = crate::secrets::hash_password("alice-password-1").unwrap();
        let built_in = store
            .insert_customer(&upstream, "alice@example.com", hash, Utc::now())
            .await
            .unwrap();
        let c = claims("carla", json!({"harmony_customer_id": "CU-1001"}));
        let linked = admit(&store, &login(), &c, Utc::now()).await.unwrap();
        assert_eq!(linked.id, built_in.id, "the same customer, with its grants");
        assert!(
            store
                .customer_by_email("alice@example.com")
                .await
                .unwrap()
                .is_none(),
            "the password sign-in is gone"
        );
        let intruder = claims("mallory", json!({"harmony_customer_id": "CU-1001"}));
        let err = admit(&store, &login(), &intruder, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(err, AdmitError::Refused(Refused::CustomerIdTaken)));
        let renumbered = claims("carla", json!({"harmony_customer_id": "CU-2002"}));
        let err = admit(&store, &login(), &renumbered, Utc::now())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            AdmitError::Refused(Refused::CustomerIdChanged)
        ));
    }

    #[test]
    fn the_greeting_is_bounded_and_free_of_control_characters() {
        let c = claims(
            "x",
            json!({"name": format!("Carla\u{7}\n{}", "x".repeat(500)), "email": "c@example.com"}),
        );
        let name = display_name(&c).unwrap();
        assert!(name.starts_with("Carlax"));
        assert_eq!(name.chars().count(), DISPLAY_NAME_MAX);
        let c = claims("x", json!({"name": "  ", "email": "c@example.com"}));
        assert_eq!(display_name(&c).as_deref(), Some("c@example.com"));
        assert_eq!(display_name(&claims("x", json!({}))), None);
    }
}
