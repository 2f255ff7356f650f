//! Who gets into the console through the workforce OpenID provider (`[console_login]`): a
//! person whose validated ID token lists the required group. Their account is found by the
//! provider's issuer and subject, made on their first sign-in, and checked for being enabled.
//!
//! The group is checked first, before any account is looked up or made: a person outside the
//! group leaves no trace in the console's accounts.
//!
//! An account made with `keyhole admin user add` for the same address is taken over by the
//! provider identity only when the provider says the address is verified; otherwise the person
//! is refused, since the address alone would let an unverified claim borrow someone's audit
//! trail.

use crate::config::ConsoleLogin;
use crate::domain::Email;
use crate::oidc::IdentityClaims;
use crate::store::{ConsoleUser, OidcIdentity, Store, StoreError};
use chrono::{DateTime, Utc};

/// Why a person the provider signed in may not enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not in the required group")]
    NotInGroup,
    #[error("the provider shared no usable e-mail address")]
    NoEmail,
    #[error("the console account is disabled")]
    Disabled,
    /// A password account has this address and the provider did not verify it.
    #[error("another console account has this e-mail address")]
    EmailTaken,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The console account of the person `claims` describes, made on their first sign-in.
pub async fn admit(
    store: &Store,
    login: &ConsoleLogin,
    claims: &IdentityClaims,
    now: DateTime<Utc>,
) -> Result<ConsoleUser, AdmitError> {
    if !claims
        .strings(&login.groups_claim)
        .contains(&login.required_group.as_str())
    {
        return Err(Refused::NotInGroup.into());
    }
    let identity = OidcIdentity {
        issuer: claims.issuer().to_owned(),
        subject: claims.subject().to_owned(),
    };
    if let Some(user) = store.console_user_by_oidc(&identity).await? {
        return enabled(user);
    }
    let email = claims
        .email()
        .and_then(|e| Email::parse(e).ok())
        .ok_or(Refused::NoEmail)?;
    match store.console_user_by_email(&email).await? {
        Some(user) if user.oidc.is_none() && claims.email_verified() => {
            if user.disabled_at.is_some() {
                return Err(Refused::Disabled.into());
            }
            if !store.link_console_user_oidc(&user.id, &identity).await? {
                return Err(Refused::EmailTaken.into());
            }
            tracing::info!(person = %email, "console account tied to its provider identity");
            enabled(
                store
                    .console_user(&user.id)
                    .await?
                    .ok_or(Refused::EmailTaken)?,
            )
        }
        Some(_) => Err(Refused::EmailTaken.into()),
        None => match store.insert_oidc_console_user(&email, &identity, now).await {
            Ok(user) => {
                tracing::info!(person = %email, "console account made at its first provider sign-in");
                Ok(user)
            }
            // Two first sign-ins at once: the other one made it.
            Err(StoreError::Conflict(_)) => match store.console_user_by_oidc(&identity).await? {
                Some(user) => enabled(user),
                None => Err(Refused::EmailTaken.into()),
            },
            Err(e) => Err(e.into()),
        },
    }
}

fn enabled(user: ConsoleUser) -> Result<ConsoleUser, AdmitError> {
    match user.disabled_at {
        Some(_) => Err(Refused::Disabled.into()),
        None => Ok(user),
    }
}
