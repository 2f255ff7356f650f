//! Browser sessions, the portal's and the console's: a random cookie value; shared state keeps
//! the session under the value's hash, with an idle timeout (refreshed on use) and an absolute
//! one.

use crate::app::App;
use crate::config::SessionSettings;
use crate::error::Internal;
use crate::secrets::{random_token, token_hash};
use crate::state::SessionRecord;
use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The portal's and the console's cookies. Behind TLS their names take the `__Host-` prefix, which browsers
/// accept only with `Secure`, `Path=/` and no `Domain`: a sibling subdomain or a plain-http
/// answer then cannot plant one (session fixation, or a known double-submit CSRF value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieName {
    Session,
    /// Double-submit cookie protecting the sign-in form, which has no session yet.
    LoginCsrf,
    Console,
    ConsoleLoginCsrf,
    /// Binds a console sign-in at the workforce provider to the browser that started it.
    ConsoleOidc,
    /// Binds a customer's sign-in at the insurer's provider to the browser that started it.
    PortalOidc,
}

impl CookieName {
    pub fn name(self, app: &App) -> &'static str {
        match (self, app.settings.cookies_secure()) {
            (CookieName::Session, true) => "__Host-kh_session",
            (CookieName::Session, false) => "kh_session",
            (CookieName::LoginCsrf, true) => "__Host-kh_login_csrf",
            (CookieName::LoginCsrf, false) => "kh_login_csrf",
            (CookieName::Console, true) => "__Host-kh_console",
            (CookieName::Console, false) => "kh_console",
            (CookieName::ConsoleLoginCsrf, true) => "__Host-kh_console_login_csrf",
            (CookieName::ConsoleLoginCsrf, false) => "kh_console_login_csrf",
            (CookieName::ConsoleOidc, true) => "__Host-kh_console_oidc",
            (CookieName::ConsoleOidc, false) => "kh_console_oidc",
            (CookieName::PortalOidc, true) => "__Host-kh_portal_oidc",
            (CookieName::PortalOidc, false) => "kh_portal_oidc",
        }
    }
}

pub struct ActiveSession<S> {
    pub hash: String,
    pub session: S,
}

impl<S: SessionRecord> ActiveSession<S> {
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| {
            p.as_bytes()
                .ct_eq(self.session.csrf_token().as_bytes())
                .into()
        })
    }
}

fn idle(timeouts: SessionSettings) -> Duration {
    Duration::from_secs(u64::from(timeouts.idle_minutes) * 60)
}

/// The request's value of one of the session cookies.
pub fn read(app: &App, req: &HttpRequest, name: CookieName) -> Option<String> {
    req.cookie(name.name(app)).map(|c| c.value().to_owned())
}

pub fn cookie(app: &App, name: CookieName, value: String) -> Cookie<'static> {
    // `Path=/` and no `Domain`, as the `__Host-` prefix requires.
    Cookie::build(name.name(app), value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(app.settings.cookies_secure())
        .finish()
}

pub fn removal_cookie(app: &App, name: CookieName) -> Cookie<'static> {
    let mut c = cookie(app, name, String::new());
    c.set_max_age(CookieDuration::ZERO);
    c
}

/// The session of this request, if any; touching it extends the idle timeout.
pub async fn current<S: SessionRecord>(
    app: &App,
    req: &HttpRequest,
    name: CookieName,
    timeouts: SessionSettings,
) -> Result<Option<ActiveSession<S>>, Internal> {
    let Some(value) = read(app, req, name) else {
        return Ok(None);
    };
    // A cookie value is ours only if it has our shape: no state round trip for junk.
    if value.is_empty() || value.len() > 64 {
        return Ok(None);
    }
    let hash = token_hash(&value);
    let Some(session) = app.state.session::<S>(&hash).await? else {
        return Ok(None);
    };
    let absolute = chrono::Duration::hours(i64::from(timeouts.absolute_hours));
    if session.created_at() + absolute <= app.clock.now() {
        app.state.delete_session::<S>(&hash).await?;
        return Ok(None);
    }
    // Only the time to live is extended: writing the session back would re-create one that a
    // sign-out deleted while this request was in flight.
    if !app.state.touch_session::<S>(&hash, idle(timeouts)).await? {
        return Ok(None);
    }
    Ok(Some(ActiveSession { hash, session }))
}

/// Starts a new session (a new id on every sign-in, against fixation) made by `make` from its
/// CSRF token; returns the cookie.
pub async fn start<S: SessionRecord>(
    app: &App,
    name: CookieName,
    timeouts: SessionSettings,
    make: impl FnOnce(String) -> S,
) -> Result<Cookie<'static>, Internal> {
    let value = random_token("").map_err(anyhow::Error::from)?;
    let csrf = random_token("").map_err(anyhow::Error::from)?;
    let session = make(csrf.expose().to_owned());
    app.state
        .put_session(&token_hash(value.expose()), &session, idle(timeouts))
        .await?;
    Ok(cookie(app, name, value.expose().to_owned()))
}

/// A double-submit CSRF token for a sign-in form, which has no session to hold one: the page
/// renders the token and carries this cookie with the same value. Returns both.
pub fn sign_in_csrf(app: &App, name: CookieName) -> Result<(String, Cookie<'static>), Internal> {
    let token = random_token("").map_err(anyhow::Error::from)?;
    let value = token.expose().to_owned();
    Ok((value.clone(), cookie(app, name, value)))
}

/// Whether a sign-in form's token is the one its cookie carries (constant time).
pub fn sign_in_csrf_matches(
    app: &App,
    req: &HttpRequest,
    name: CookieName,
    presented: &str,
) -> bool {
    read(app, req, name)
        .is_some_and(|c| !presented.is_empty() && c.as_bytes().ct_eq(presented.as_bytes()).into())
}

/// Sign-ins one address may start at a provider within [`crate::oidc::SIGN_IN_LIFETIME`]
/// (per relying party). Each parks its state, nonce and verifier in shared state for that
/// long, for anyone who asks: without a bound a loop of GETs fills it. A person needs a
/// handful; a shared office or a shop's counter, a few dozen.
const PROVIDER_STARTS_PER_ADDRESS: u64 = 30;

/// Sends the browser to `party`'s provider (asking for a sign-in at most `max_age` old), to
/// come back to `next`, with the cookie `binding` tying the sign-in to this browser. The
/// console's sign-in and the portal's share it.
pub async fn send_to_provider(
    app: &App,
    req: &HttpRequest,
    party: &crate::oidc::RelyingParty,
    binding: CookieName,
    max_age: Option<Duration>,
    next: &str,
) -> Result<actix_web::HttpResponse, crate::error::PageError> {
    use crate::error::PageError;
    use crate::oidc::SIGN_IN_LIFETIME;
    let source = crate::http::source::source_addr(req);
    let started = app
        .state
        .count_oidc_start(party.purpose(), source, SIGN_IN_LIFETIME)
        .await
        .map_err(Internal::from)?;
    if started > PROVIDER_STARTS_PER_ADDRESS {
        tracing::warn!(client_ip = ?source, purpose = party.purpose(), "sign-ins at the provider rate limited");
        return Err(PageError::TooMany(
            "Too many sign-ins started from your network. Please wait a few minutes and try again."
                .into(),
        ));
    }
    let started = party.begin(max_age, Some(next)).await?;
    let mut cookie = cookie(app, binding, started.browser_binding.expose().to_owned());
    cookie.set_max_age(CookieDuration::seconds(
        i64::try_from(SIGN_IN_LIFETIME.as_secs()).unwrap_or(600),
    ));
    let mut response = crate::http::pages::see_other(started.authorization_url.as_str());
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    Ok(response)
}
