//! Sign-in, sign-out and the portal's landing page.

use super::session::{self, CookieName};
use crate::app::App;
use crate::error::{Internal, PageError};
use crate::http::pages::{page, render, see_other};
use crate::http::source::source_addr;
use crate::portal::SignInLimits;
use crate::secrets::{dummy_password_hash, password_matches};
use crate::state::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

/// Only local targets: a sign-in link must not become an open redirect.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n.starts_with("/portal") || n.starts_with("/oauth/authorize?"))
                && !n.starts_with("//")
                && !n.contains('\\') =>
        {
            n
        }
        _ => "/portal",
    }
}

/// Renders the sign-in form with a fresh double-submit CSRF cookie.
pub fn login_page(
    app: &App,
    next: &str,
    partner_name: Option<&str>,
    email: &str,
    error: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let (csrf_token, csrf_cookie) = crate::http::session::sign_in_csrf(app, CookieName::LoginCsrf)?;
    let body = render(
        "login.html",
        minijinja::context! {
            csrf_token, next, partner_name, email, error,
        },
    )?;
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut response = page(status, body, None);
    response
        .add_cookie(&csrf_cookie)
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The sign-in page.
#[get("/portal/login")]
pub async fn show(
    app: web::Data<App>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, PageError> {
    login_page(&app, safe_next(query.next.as_deref()), None, "", None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf_token: String,
    next: Option<String>,
}

/// Checks the password; on success starts a session and returns to `next`.
#[post("/portal/login")]
pub async fn submit(
    app: web::Data<App>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    if !crate::http::session::sign_in_csrf_matches(
        &app,
        &req,
        CookieName::LoginCsrf,
        &form.csrf_token,
    ) {
        return Err(PageError::Forbidden);
    }
    let next = safe_next(form.next.as_deref()).to_owned();
    let source = source_addr(&req);
    if !SignInLimits::attempt(&app.state, &form.email, source)
        .await
        .map_err(Internal::from)?
    {
        tracing::warn!(client_ip = ?source, "customer sign-in rate limited");
        let mut response = login_page(
            &app,
            &next,
            None,
            &form.email,
            Some("Too many attempts. Please wait a minute and try again."),
        )?;
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(response);
    }
    let customer = app.store.customer_by_email(&form.email).await?;
    let stored_hash = customer
        .as_ref()
        .map(|c| c.password_hash.as_str())
        .unwrap_or(dummy_password_hash());
    let password = form.password;
    let stored = stored_hash.to_owned();
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let matches = web::block(move || password_matches(&password, &stored))
        .await
        .map_err(anyhow::Error::from)?;
    let Some(customer) = customer.filter(|_| matches) else {
        // Never the password, and not the e-mail either: only that a sign-in failed.
        tracing::warn!(client_ip = ?source, "customer sign-in failed");
        return login_page(
            &app,
            &next,
            None,
            &form.email,
            Some("That e-mail address and password do not match. Please try again."),
        );
    };
    SignInLimits::succeeded(&app.state, &form.email, source)
        .await
        .map_err(Internal::from)?;
    if let Some(old) = session::current(&app, &req).await? {
        app.state.delete_session::<Session>(&old.hash).await?;
    }
    let cookie = session::start(&app, customer.id).await?;
    let mut response = see_other(&next);
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    response
        .add_removal_cookie(&session::removal_cookie(&app, CookieName::LoginCsrf))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf_token: Option<String>,
}

/// Ends the session.
#[post("/portal/logout")]
pub async fn logout(
    app: web::Data<App>,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, PageError> {
    if let Some(active) = session::current(&app, &req).await? {
        if !active.csrf_matches(form.csrf_token.as_deref()) {
            return Err(PageError::Forbidden);
        }
        app.state.delete_session::<Session>(&active.hash).await?;
    }
    let mut response = see_other("/portal/login");
    response
        .add_removal_cookie(&session::removal_cookie(&app, CookieName::Session))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leaves_the_site() {
        assert_eq!(
            safe_next(Some("/oauth/authorize?client_id=x")),
            "/oauth/authorize?client_id=x"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/portal\\@evil",
            "/elsewhere",
        ] {
            assert_eq!(safe_next(Some(bad)), "/portal", "{bad}");
        }
        assert_eq!(safe_next(None), "/portal");
    }
}
