//! Every console page passes [`gate`]: it finds the person's session (no session: to the
//! sign-in page), checks their account is still enabled, and records the request in the admin
//! audit trail under their name before anything runs. If that record cannot be written the
//! person gets `503`, never the page — as with the admin API, no action without its audit row.

use super::session::{self, ActiveConsoleSession};
use crate::app::App;
use crate::error::{Internal, PageError};
use crate::http::middleware::audit_entry;
use crate::http::pages::see_other;
use crate::state::ConsoleSession;
use crate::store::AdminAuditEntry;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, ResponseError, web};
use std::future::{Ready, ready};
use subtle::ConstantTimeEq;

/// The signed-in person a console handler acts for, and their request's audit row.
#[derive(Debug, Clone)]
pub struct Person {
    pub user_id: String,
    pub email: String,
    pub session_hash: String,
    csrf_token: String,
    pub audit_id: i64,
    /// The session signed in with the one-time password.
    pub must_set_password: bool,
}

impl Person {
    /// The token every console form carries (CSRF protection).
    pub fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

impl FromRequest for Person {
    type Error = PageError;
    type Future = Ready<Result<Self, PageError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only the gate puts a person here; a handler outside it refuses.
        ready(
            req.extensions()
                .get::<Person>()
                .cloned()
                .ok_or(PageError::Forbidden),
        )
    }
}

/// Where the sign-in page sends the person back to: console paths only (never `//host`), and
/// nothing a `Location` header cannot hold (a line break there failed the redirect with a 500).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n.len() <= 512 =>
        {
            n
        }
        _ => "/console",
    }
}

/// A browser that says where a form came from must say it came from this host: defence in
/// depth beside the CSRF token. The victim's browser sends our `Host` and the attacker's
/// `Origin`, so comparing the two needs no knowledge of how the console is reached.
fn cross_origin(req: &ServiceRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

fn answer(req: ServiceRequest, error: PageError) -> ServiceResponse<BoxBody> {
    req.into_response(error.error_response())
}

/// Pages a person on a one-time password may still open.
fn allowed_before_password(path: &str) -> bool {
    matches!(path, "/console/password" | "/console/logout")
}

pub async fn gate(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(app) = req.app_data::<web::Data<App>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "no application state",
        ));
    };
    if req.method() != Method::GET && req.method() != Method::HEAD && cross_origin(&req) {
        return Ok(answer(req, PageError::Forbidden));
    }
    let active = match session::current(&app, req.request()).await {
        Ok(active) => active,
        Err(e) => return Ok(answer(req, e.into())),
    };
    let Some(active) = active else {
        if req.method() == Method::GET {
            let target = match req.query_string() {
                "" => req.path().to_owned(),
                q => format!("{}?{q}", req.path()),
            };
            let next = safe_next(Some(&target));
            let location = format!(
                "/console/login?{}",
                serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
            );
            return Ok(req.into_response(see_other(&location)));
        }
        return Ok(answer(req, PageError::Forbidden));
    };
    match enabled(&app, &active).await {
        Ok(true) => {}
        Ok(false) => {
            if let Err(e) = session::end(&app, &active.hash).await {
                return Ok(answer(req, e.into()));
            }
            return Ok(req.into_response(see_other("/console/login")));
        }
        Err(e) => return Ok(answer(req, e.into())),
    }
    if active.session.must_set_password && !allowed_before_password(req.path()) {
        return Ok(req.into_response(see_other("/console/password")));
    }
    let entry = AdminAuditEntry {
        console_user_id: Some(active.session.user_id.clone()),
        console_user_email: Some(active.session.email.clone()),
        ..audit_entry(req.request(), app.clock.now())
    };
    let audit_id = match app.store.insert_admin_audit(entry.clone()).await {
        Ok(id) => id,
        Err(e) => return Ok(answer(req, Internal::from(e).into())),
    };
    req.extensions_mut().insert(Person {
        user_id: active.session.user_id.clone(),
        email: active.session.email.clone(),
        session_hash: active.hash.clone(),
        csrf_token: active.session.csrf_token.clone(),
        audit_id,
        must_set_password: active.session.must_set_password,
    });
    let mut response = next.call(req).await?.map_into_boxed_body();
    // Under the pages' usual `no-referrer`, a browser sends `Origin: null` with every form
    // post, which `cross_origin` (rightly) refuses: the console's own pages let the browser name
    // their origin to this origin only, and to no other.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    let status = response.status().as_u16();
    tracing::info!(person = %entry.console_user_email.as_deref().unwrap_or(""), method = %entry.method, path = %entry.path, status, "console request");
    app.metrics.observe_admin_call(status);
    if let Err(e) = app.store.finish_admin_audit(audit_id, status).await {
        tracing::error!(error = %e, audit_id, "recording a console request's status failed");
    }
    Ok(response)
}

/// A disabled account's sessions end at its next request, and so does a session on a password
/// the account no longer has (changed in another browser): a password that leaked stops
/// opening the console when its owner replaces it.
async fn enabled(app: &App, active: &ActiveConsoleSession) -> Result<bool, Internal> {
    Ok(app
        .store
        .console_user(&active.session.user_id)
        .await?
        .is_some_and(|u| {
            u.disabled_at.is_none()
                && bool::from(
                    ConsoleSession::digest_of(&u.password_hash)
                        .as_bytes()
                        .ct_eq(active.session.password_digest.as_bytes()),
                )
        }))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(
            safe_next(Some("/console/access-log?outcome=denied")),
            "/console/access-log?outcome=denied"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/console\\@evil",
            "/console\r\nSet-Cookie: x=y",
            "/portal",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console", "{bad}");
        }
        assert_eq!(
            safe_next(Some(&format!("/console/{}", "a".repeat(600)))),
            "/console"
        );
    }
}
