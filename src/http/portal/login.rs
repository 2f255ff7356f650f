//! Sign-in, sign-out and the portal's landing page. With `[customer_login]` the sign-in page
//! sends the customer to the insurer's provider (`oidc.rs`) and built-in passwords are refused.

use super::oidc;
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

/// Only local targets: a sign-in link must not become an open redirect. Nor may it hold what a
/// `Location` header cannot (a line break there fails the redirect with a 500, after the
/// customer signed in at the provider), as the console's `safe_next` already knew.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n.starts_with("/portal") || n.starts_with("/oauth/authorize?"))
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
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

/// The sign-in page; with `[customer_login]`, a redirect to the provider.
#[get("/portal/login")]
pub async fn show(
    app: web::Data<App>,
    req: HttpRequest,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(query.next.as_deref());
    if oidc::provider_sign_in(&app).is_some() {
        // Consent needs a fresh sign-in; the portal's pages ask for one where they need it.
        let fresh = next.starts_with("/oauth/authorize");
        return oidc::send_to_provider(&app, &req, fresh, next).await;
    }
    login_page(&app, next, None, "", None)
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
    if oidc::provider_sign_in(&app).is_some() {
        // One way in: the provider's. A built-in password left over from before (or made by
        // mistake) opens nothing.
        tracing::warn!("built-in customer sign-in refused: customers sign in at the provider");
        return Err(PageError::Refused(
            "Please sign in with your Harmony account: go to the portal and you will be sent \
             to Harmony's sign-in page."
                .into(),
        ));
    }
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
    let cookie = session::start(
        &app,
        session::SignIn {
            customer_id: customer.id,
            auth_time: Some(app.clock.now()),
            display_name: None,
            via_provider: false,
        },
    )
    .await?;
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
    // Only a real sign-out goes on to the provider's: a cross-site post must not sign the
    // customer out of their Harmony account. Real is a session and its CSRF token; or, once
    // the session has expired (idle), the browser's word that the form was posted from one of
    // our own pages: the customer pressed "Sign out" and must not be left signed in at the
    // provider (on a shared device the next person would be let straight back in).
    let next = match session::current(&app, &req).await? {
        Some(active) => {
            if !active.csrf_matches(form.csrf_token.as_deref()) {
                return Err(PageError::Forbidden);
            }
            app.state.delete_session::<Session>(&active.hash).await?;
            oidc::after_sign_out(&app).await
        }
        None if oidc::provider_sign_in(&app).is_some() => {
            if posted_from_our_page(&req) {
                oidc::after_sign_out(&app).await
            } else {
                oidc::SIGNED_OUT_PATH.to_owned()
            }
        }
        None => "/portal/login".to_owned(),
    };
    let mut response = see_other(&next);
    response
        .add_removal_cookie(&session::removal_cookie(&app, CookieName::Session))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

/// Whether the browser says the request came from a page of this origin (Fetch Metadata,
/// `Sec-Fetch-Site`, which no page can set). `Origin` cannot say it: under the pages'
/// `no-referrer` a browser sends `Origin: null` with every form post.
fn posted_from_our_page(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin")
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
            "/portal\r\nSet-Cookie: x=y",
            "/portal\0",
            "/portal\u{7f}",
            "/portal\u{85}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/portal", "{bad}");
        }
        assert_eq!(safe_next(None), "/portal");
    }
}
