//! Customer sessions: the shared browser session with the portal's cookie and timeouts.

use crate::app::App;
use crate::domain::CustomerId;
use crate::error::Internal;
use crate::http::session as browser;
use crate::state::Session;
use actix_web::HttpRequest;
use actix_web::cookie::Cookie;

pub use browser::{CookieName, cookie, read, removal_cookie};

pub type ActiveSession = browser::ActiveSession<Session>;

/// The customer's session of this request, if any.
pub async fn current(app: &App, req: &HttpRequest) -> Result<Option<ActiveSession>, Internal> {
    browser::current(app, req, CookieName::Session, app.settings.session).await
}

/// Starts a customer's session; returns its cookie.
pub async fn start(app: &App, customer_id: CustomerId) -> Result<Cookie<'static>, Internal> {
    let created_at = app.clock.now();
    browser::start(
        app,
        CookieName::Session,
        app.settings.session,
        |csrf_token| Session {
            customer_id,
            csrf_token,
            created_at,
        },
    )
    .await
}
