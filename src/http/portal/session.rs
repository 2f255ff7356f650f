//! Customer sessions: a random cookie value; shared state keeps the session under the value's
//! hash, with an idle timeout (refreshed on use) and an absolute one.

use crate::app::App;
use crate::error::Internal;
use crate::secrets::{random_token, token_hash};
use crate::state::Session;
use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The portal's cookies. Behind TLS their names take the `__Host-` prefix, which browsers
/// accept only with `Secure`, `Path=/` and no `Domain`: a sibling subdomain or a plain-http
/// answer then cannot plant one (session fixation, or a known double-submit CSRF value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieName {
    Session,
    /// Double-submit cookie protecting the sign-in form, which has no session yet.
    LoginCsrf,
}

impl CookieName {
    pub fn name(self, app: &App) -> &'static str {
        match (self, app.settings.cookies_secure()) {
            (CookieName::Session, true) => "__Host-kh_session",
            (CookieName::Session, false) => "kh_session",
            (CookieName::LoginCsrf, true) => "__Host-kh_login_csrf",
            (CookieName::LoginCsrf, false) => "kh_login_csrf",
        }
    }
}

pub struct ActiveSession {
    pub hash: String,
    pub session: Session,
}

impl ActiveSession {
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| {
            p.as_bytes()
                .ct_eq(self.session.csrf_token.as_bytes())
                .into()
        })
    }
}

fn idle(app: &App) -> Duration {
    Duration::from_secs(u64::from(app.settings.session.idle_minutes) * 60)
}

/// The request's value of one of the portal's cookies.
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
pub async fn current(app: &App, req: &HttpRequest) -> Result<Option<ActiveSession>, Internal> {
    let Some(value) = read(app, req, CookieName::Session) else {
        return Ok(None);
    };
    let hash = token_hash(&value);
    let Some(session) = app.state.session(&hash).await? else {
        return Ok(None);
    };
    let absolute = chrono::Duration::hours(i64::from(app.settings.session.absolute_hours));
    if session.created_at + absolute <= app.clock.now() {
        app.state.delete_session(&hash).await?;
        return Ok(None);
    }
    // Only the time to live is extended: writing the session back would re-create one that a
    // sign-out deleted while this request was in flight.
    if !app.state.touch_session(&hash, idle(app)).await? {
        return Ok(None);
    }
    Ok(Some(ActiveSession { hash, session }))
}

/// Starts a new session (a new id on every sign-in, against fixation); returns the cookie.
pub async fn start(
    app: &App,
    customer_id: crate::domain::CustomerId,
) -> Result<Cookie<'static>, Internal> {
    let value = random_token("").map_err(anyhow::Error::from)?;
    let csrf = random_token("").map_err(anyhow::Error::from)?;
    let session = Session {
        customer_id,
        csrf_token: csrf.expose().to_owned(),
        created_at: app.clock.now(),
    };
    app.state
        .put_session(&token_hash(value.expose()), &session, idle(app))
        .await?;
    Ok(cookie(app, CookieName::Session, value.expose().to_owned()))
}
