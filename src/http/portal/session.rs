//! Customer sessions: the shared browser session with the portal's cookie and timeouts, and
//! the rule for how recent a sign-in must be before consent, revocation and the download.

use crate::app::App;
use crate::domain::CustomerId;
use crate::error::Internal;
use crate::http::session as browser;
use crate::oidc::LEEWAY_SECONDS;
use crate::state::Session;
use actix_web::HttpRequest;
use actix_web::cookie::Cookie;
use chrono::{DateTime, Utc};

pub use browser::{CookieName, cookie, read, removal_cookie};

pub type ActiveSession = browser::ActiveSession<Session>;

/// How a customer proved who they are, for the session that follows.
pub struct SignIn {
    pub customer_id: CustomerId,
    /// The password check (now), or the provider's `auth_time` (unknown when it sent none).
    pub auth_time: Option<DateTime<Utc>>,
    pub display_name: Option<String>,
    pub via_provider: bool,
}

/// The customer's session of this request, if any. A session from a sign-in at the provider
/// ends here once the provider has said the customer signed out there since (one more
/// shared-state read, for those sessions only). While customers sign in at the provider every
/// session is read so: one written before sessions said how they started (`via_provider`
/// absent reads as false) may well be the provider's, and a built-in account's from before
/// `[customer_login]` belongs to a customer the provider now speaks for.
pub async fn current(app: &App, req: &HttpRequest) -> Result<Option<ActiveSession>, Internal> {
    let Some(active) =
        browser::current::<Session>(app, req, CookieName::Session, app.settings.session).await?
    else {
        return Ok(None);
    };
    if (active.session.via_provider || app.settings.customer_login.is_some())
        && let Some(signed_out) = app
            .state
            .provider_sign_out(active.session.customer_id)
            .await?
        && signed_out >= active.session.created_at
    {
        app.state.delete_session::<Session>(&active.hash).await?;
        return Ok(None);
    }
    Ok(Some(active))
}

/// Starts a customer's session; returns its cookie.
pub async fn start(app: &App, sign_in: SignIn) -> Result<Cookie<'static>, Internal> {
    let created_at = app.clock.now();
    browser::start(
        app,
        CookieName::Session,
        app.settings.session,
        |csrf_token| Session {
            customer_id: sign_in.customer_id,
            csrf_token,
            created_at,
            auth_time: sign_in.auth_time,
            display_name: sign_in.display_name,
            via_provider: sign_in.via_provider,
        },
    )
    .await
}

/// Whether the session's sign-in is recent enough to consent, revoke or download. With
/// `[customer_login]` it must be at most `reauthenticate_after_minutes` old (an unknown one is
/// not); built-in accounts sign in with a password each session, and their sessions' idle and
/// absolute limits are the rule.
///
/// The clock skew the ID-token check forgives ([`LEEWAY_SECONDS`]) is forgiven here too, both
/// ways: a sign-in that check just accepted against `max_age` must be recent enough, or the
/// customer is sent straight back to a provider that answers with the same `auth_time`; and a
/// sign-in dated further ahead than that is not recent at all (it would stay "recent" for as
/// long as it lies ahead).
pub fn recent_enough(app: &App, session: &Session) -> bool {
    match &app.settings.customer_login {
        None => true,
        Some(login) => session.auth_time.is_some_and(|at| {
            let age = app.clock.now() - at;
            let leeway = chrono::Duration::seconds(LEEWAY_SECONDS);
            let limit = chrono::Duration::minutes(i64::from(login.reauthenticate_after_minutes));
            age >= -leeway && age <= limit + leeway
        }),
    }
}

/// The page for a form posted on a sign-in that has aged past the rule since the form was
/// shown: nothing is done, and the customer is told why.
pub fn stale_sign_in() -> crate::error::PageError {
    crate::error::PageError::Refused(
        "For your security, this needs a recent sign-in. Please start again: you will be asked \
         to sign in once more."
            .into(),
    )
}
