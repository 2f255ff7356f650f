//! Console sessions: the shared browser session with the console's own cookie, key space and
//! (shorter) timeouts. A customer's portal cookie is not a console session, nor the reverse.

use crate::app::App;
use crate::error::Internal;
use crate::http::middleware::audit_entry;
use crate::http::session as browser;
use crate::state::ConsoleSession;
use crate::store::AdminAuditEntry;
use crate::store::ConsoleUser;
use actix_web::HttpRequest;
use actix_web::cookie::Cookie;

pub use browser::CookieName;

pub type ActiveConsoleSession = browser::ActiveSession<ConsoleSession>;

/// The console session of this request, if any; touching it extends the idle timeout.
pub async fn current(
    app: &App,
    req: &HttpRequest,
) -> Result<Option<ActiveConsoleSession>, Internal> {
    browser::current(app, req, CookieName::Console, app.settings.console_session).await
}

/// Starts a session for `user` (a new id on every sign-in); returns its cookie. A user still
/// on the one-time password may do nothing but choose a real one. The sign-in goes into the
/// admin audit trail first, under the person's name: no session without its row.
pub async fn start(
    app: &App,
    req: &HttpRequest,
    user: &ConsoleUser,
) -> Result<Cookie<'static>, Internal> {
    let entry = AdminAuditEntry {
        // The sign-in's answer: a redirect into the console.
        status: 303,
        query_sha256: None,
        console_user_id: Some(user.id.clone()),
        console_user_email: Some(user.email.as_str().to_owned()),
        ..audit_entry(req, app.clock.now())
    };
    app.store.insert_admin_audit(entry).await?;
    let created_at = app.clock.now();
    browser::start(
        app,
        CookieName::Console,
        app.settings.console_session,
        |csrf_token| ConsoleSession {
            user_id: user.id.clone(),
            email: user.email.as_str().to_owned(),
            csrf_token,
            created_at,
            must_set_password: !user.password_set,
            password_digest: ConsoleSession::digest_of(&user.password_hash),
        },
    )
    .await
}

/// Ends a session; returns the cookie that clears it in the browser.
pub async fn end(app: &App, hash: &str) -> Result<Cookie<'static>, Internal> {
    app.state.delete_session::<ConsoleSession>(hash).await?;
    Ok(browser::removal_cookie(app, CookieName::Console))
}
