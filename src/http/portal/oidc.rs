//! Customer sign-in through the insurer's OpenID provider (`[customer_login]`). The protocol is
//! `crate::oidc`'s and which customer it is `crate::portal::provider`'s; this file moves cookies
//! and redirects:
//!
//! - [`send_to_provider`]: the sign-in page, the consent flow and the portal's revocation and
//!   download send the browser to the provider (with `max_age` when the sign-in must be fresh);
//! - `GET /portal/oidc/callback` takes the answer and starts the session;
//! - `GET /portal/signed-out` is where the provider returns a browser after sign-out;
//! - `POST /portal/oidc/backchannel-logout` (`backchannel.rs`) is where the provider says a
//!   customer signed out there.
//!
//! Both routes answer 404 without `[customer_login]`.

use super::session::{self, SignIn};
use crate::app::App;
use crate::config::CustomerLogin;
use crate::error::{Internal, PageError};
use crate::http::pages::{form_origin, page, render, see_other};
use crate::http::session::{self as browser, CookieName};
use crate::oidc::{AuthorizationAnswer, MAX_RETURN_TO_LENGTH, RelyingParty};
use crate::portal::provider::{self, AdmitError, Refused};
use crate::state::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, web};
use std::sync::Arc;

/// Where the provider sends the browser back; registered with the provider as
/// `{public_url}/portal/oidc/callback`.
pub const CALLBACK_PATH: &str = "/portal/oidc/callback";

/// Where the provider returns a browser after RP-initiated sign-out; registered with the
/// provider as a post-logout redirect URI.
pub const SIGNED_OUT_PATH: &str = "/portal/signed-out";

/// The relying party and its settings, when customers sign in at the provider.
pub fn provider_sign_in(app: &App) -> Option<(&Arc<RelyingParty>, &CustomerLogin)> {
    match (&app.customer_login, &app.settings.customer_login) {
        (Some(party), Some(settings)) => Some((party, settings)),
        _ => None,
    }
}

/// Sends the browser to the provider, to come back to `next` (a local path the caller checked).
/// `fresh` asks for a sign-in at most `reauthenticate_after_minutes` old (`max_age`), as
/// consent, revocation and the download need.
pub async fn send_to_provider(
    app: &App,
    req: &HttpRequest,
    fresh: bool,
    next: &str,
) -> Result<HttpResponse, PageError> {
    let (party, settings) = provider_sign_in(app).ok_or(PageError::NotFound)?;
    if next.len() > MAX_RETURN_TO_LENGTH {
        // Parked, it would be dropped, and the customer would land on the overview with the
        // partner never hearing back: say so instead, and park nothing.
        return Err(PageError::BadRequest(
            "This link is too long to sign in with. Please go back and try again from the \
             start."
                .into(),
        ));
    }
    let max_age = fresh.then(|| settings.reauthenticate_after());
    browser::send_to_provider(app, req, party, CookieName::PortalOidc, max_age, next).await
}

/// Completes the sign-in: the customer the ID token names gets a portal session (made on their
/// first visit) and goes back where they were going; anyone else gets a page saying why, and
/// nothing else.
#[get("/portal/oidc/callback")]
pub async fn callback(
    app: web::Data<App>,
    req: HttpRequest,
    query: web::Query<AuthorizationAnswer>,
) -> Result<HttpResponse, PageError> {
    let (party, settings) = provider_sign_in(&app).ok_or(PageError::NotFound)?;
    let answer = query.into_inner();
    let binding = browser::read(&app, &req, CookieName::PortalOidc);
    let signed_in = party.finish(binding.as_deref(), &answer).await?;
    let customer =
        match provider::admit(&app.store, settings, &signed_in.claims, app.clock.now()).await {
            Ok(customer) => customer,
            Err(AdmitError::Store(e)) => return Err(Internal::from(e).into()),
            Err(AdmitError::Refused(refused)) => {
                tracing::warn!(reason = %refused, "customer sign-in at the provider refused");
                return Err(PageError::Refused(refusal_message(refused).into()));
            }
        };
    if let Some(old) = session::current(&app, &req).await? {
        app.state.delete_session::<Session>(&old.hash).await?;
    }
    let cookie = session::start(
        &app,
        SignIn {
            customer_id: customer.id,
            // A provider clock running ahead must not make a sign-in count as recent for
            // longer than it is.
            auth_time: signed_in
                .claims
                .auth_time()
                .map(|at| at.min(app.clock.now())),
            display_name: provider::display_name(&signed_in.claims),
            via_provider: true,
        },
    )
    .await?;
    if let Some(sid) = signed_in.claims.string("sid") {
        super::backchannel::remember_provider_session(&app, sid, customer.id).await?;
    }
    tracing::info!(customer = %customer.id, "customer signed in through the provider");
    let next = super::login::safe_next(signed_in.return_to.as_deref());
    let mut response = see_other(next);
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    response
        .add_removal_cookie(&browser::removal_cookie(&app, CookieName::PortalOidc))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

/// After sign-out at the provider: a plain page (a sign-in from here would only send the
/// customer straight back to the provider).
#[get("/portal/signed-out")]
pub async fn signed_out(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    provider_sign_in(&app).ok_or(PageError::NotFound)?;
    let body = render("signed_out.html", minijinja::context! {})?;
    Ok(page(StatusCode::OK, body, None))
}

/// Where a sign-out sends the browser: through the provider's end-session endpoint when it has
/// one, so that its session ends too; otherwise to our signed-out page. An unreachable provider
/// does not keep the customer signed in here: they land on our page.
pub async fn after_sign_out(app: &App) -> String {
    let Some((party, _)) = provider_sign_in(app) else {
        return "/portal/login".into();
    };
    // The provider's answer comes back to a page, not to the sign-in: that would only send the
    // browser straight back to the provider.
    let back = url::Url::parse(&format!("{}{SIGNED_OUT_PATH}", app.settings.issuer()));
    match back {
        Ok(back) => match party.end_session_url(&back).await {
            Ok(Some(url)) => url.into(),
            Ok(None) => SIGNED_OUT_PATH.into(),
            Err(e) => {
                tracing::warn!(error = %e, "no sign-out at the provider");
                SIGNED_OUT_PATH.into()
            }
        },
        Err(_) => SIGNED_OUT_PATH.into(),
    }
}

/// The origins a page's sign-out form may be redirected to, for its `form-action` (browsers
/// apply it to the redirect that answers the form): the provider's, and its end-session
/// endpoint's when that lives elsewhere (discovery allows any https address for it), or the
/// browser would block the sign-out at the provider.
pub fn sign_out_targets(app: &App) -> Option<String> {
    let (party, settings) = provider_sign_in(app)?;
    let issuer = form_origin(&settings.issuer);
    let end_session = party.known_end_session_origin();
    match (issuer, end_session) {
        (Some(issuer), Some(end)) if end != issuer => Some(format!("{issuer} {end}")),
        (Some(issuer), _) => Some(issuer),
        (None, end) => end,
    }
}

fn refusal_message(refused: Refused) -> &'static str {
    match refused {
        Refused::NoCustomerId | Refused::MalformedCustomerId => {
            "You signed in, but your Harmony account did not tell us your customer number, so we \
             cannot show your claims here. Please contact Harmony customer service."
        }
        Refused::CustomerIdTaken | Refused::CustomerIdChanged => {
            "You signed in, but your customer number is linked to another sign-in. Please \
             contact Harmony customer service."
        }
    }
}
