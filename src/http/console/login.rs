//! Console sign-in with a password (throttled like the portal's), the forced choice of a real
//! password after the one-time one, and sign-out.

use super::form::{Checked, CsrfProtected};
use super::gate::{Person, safe_next};
use super::session;
use crate::app::App;
use crate::domain::Email;
use crate::error::{Internal, PageError};
use crate::http::pages::{page, render, see_other};
use crate::http::session::{self as browser, CookieName};
use crate::http::source::source_addr;
use crate::portal::SignInLimits;
use crate::secrets::{dummy_password_hash, hash_password, password_matches};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

/// Long enough to resist guessing offline; bounded so hashing stays cheap.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 12..=128;

/// Console accounts are counted apart from customers' (same rules, another key).
fn throttle_key(email: &str) -> String {
    format!("console:{}", email.trim().to_lowercase())
}

fn login_page(
    app: &App,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let (csrf_token, csrf_cookie) = browser::sign_in_csrf(app, CookieName::ConsoleLoginCsrf)?;
    // With a workforce provider the page is a link to it, carrying `next` along.
    let provider_url = app.settings.console_login.is_some().then(|| {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        format!("/console/oidc/login?{query}")
    });
    let body = render(
        "console/login.html",
        minijinja::context! { csrf_token, next, email, error, provider_url },
    )?;
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

/// The console's sign-in page.
#[get("/console/login")]
pub async fn show(
    app: web::Data<App>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(query.next.as_deref());
    login_page(&app, next, "", None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf_token: String,
    next: Option<String>,
}

/// Checks the password; on success starts a session (a new id) and goes to `next`, or to the
/// password page first while the account still has its one-time password.
#[post("/console/login")]
pub async fn submit(
    app: web::Data<App>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    // While the workforce provider is configured, it alone signs people in: a password
    // (a one-time one from before, say) opens nothing.
    if app.settings.console_login.is_some() {
        return Err(PageError::Refused(
            "Passwords are not used here: sign in through your organisation's sign-in service."
                .into(),
        ));
    }
    let form = form.into_inner();
    if !browser::sign_in_csrf_matches(&app, &req, CookieName::ConsoleLoginCsrf, &form.csrf_token) {
        return Err(PageError::Forbidden);
    }
    let next = safe_next(form.next.as_deref()).to_owned();
    let shown_email: String = form.email.chars().take(254).collect();
    let source = source_addr(&req);
    let account = throttle_key(&form.email);
    if !SignInLimits::attempt(&app.state, &account, source)
        .await
        .map_err(Internal::from)?
    {
        tracing::warn!(client_ip = ?source, "console sign-in rate limited");
        return login_page(
            &app,
            &next,
            &shown_email,
            Some("Too many attempts. Please wait a few minutes and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = match Email::parse(&form.email) {
        Ok(email) => app.store.console_user_by_email(&email).await?,
        Err(_) => None,
    };
    let stored = user
        .as_ref()
        .filter(|u| u.disabled_at.is_none())
        .map_or(dummy_password_hash(), |u| u.password_hash.as_str())
        .to_owned();
    let presented = form.password;
    // argon2 takes tens of milliseconds of CPU (and the dummy hash as long as a real one, so
    // timing does not tell whether an account exists): off the async workers.
    let matches = web::block(move || {
        presented.chars().count() <= PASSWORD_CHARS.end() * 4
            && password_matches(&presented, &stored)
    })
    .await
    .map_err(anyhow::Error::from)?;
    let Some(user) = user.filter(|u| matches && u.disabled_at.is_none()) else {
        tracing::warn!(client_ip = ?source, "console sign-in failed");
        return login_page(
            &app,
            &next,
            &shown_email,
            Some("That e-mail address and password do not match."),
            StatusCode::UNAUTHORIZED,
        );
    };
    SignInLimits::succeeded(&app.state, &account, source)
        .await
        .map_err(Internal::from)?;
    if let Some(old) = session::current(&app, &req).await? {
        session::end(&app, &old.hash).await?;
    }
    tracing::info!(person = %user.email, client_ip = ?source, "console sign-in");
    let cookie = session::start(&app, &req, &user).await?;
    let mut response = see_other(if user.password_set {
        &next
    } else {
        "/console/password"
    });
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    response
        .add_removal_cookie(&browser::removal_cookie(&app, CookieName::ConsoleLoginCsrf))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

fn password_page(
    person: &Person,
    first: bool,
    error: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let body = render(
        "console/password.html",
        minijinja::context! {
            csrf_token => person.csrf_token(), email => &person.email, first, error,
            min => PASSWORD_CHARS.start(), max => PASSWORD_CHARS.end(),
        },
    )?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(status, body, None))
}

/// Whether this session signed in with the one-time password. An account that signs in
/// through the workforce provider has no password here to choose.
async fn on_one_time_password(app: &App, person: &Person) -> Result<bool, PageError> {
    let user = app
        .store
        .console_user(&person.user_id)
        .await?
        .ok_or(PageError::Forbidden)?;
    if user.oidc.is_some() {
        return Err(PageError::BadRequest(
            "Your account signs in through your organisation's sign-in service; it has no password here."
                .into(),
        ));
    }
    Ok(person.must_set_password)
}

/// Choose a password: required after signing in with the one-time password.
#[get("/password")]
pub async fn show_password(app: web::Data<App>, person: Person) -> Result<HttpResponse, PageError> {
    let first = on_one_time_password(&app, &person).await?;
    password_page(&person, first, None)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf_token: String,
    /// Needed unless this session signed in with the one-time password just now.
    current: Option<String>,
    password: String,
    confirm: String,
}

impl CsrfProtected for PasswordForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// Stores the new password's hash, ends this session and starts a fresh one.
#[post("/password")]
pub async fn set_password(
    app: web::Data<App>,
    req: HttpRequest,
    person: Person,
    form: Checked<PasswordForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.0;
    let first = on_one_time_password(&app, &person).await?;
    let length = form.password.chars().count();
    if !PASSWORD_CHARS.contains(&length) {
        let message = format!(
            "Choose a password of {} to {} characters.",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        );
        return password_page(&person, first, Some(&message));
    }
    if form.password != form.confirm {
        return password_page(&person, first, Some("The two passwords differ."));
    }
    let user = app
        .store
        .console_user(&person.user_id)
        .await?
        .ok_or(PageError::Forbidden)?;
    // Asking for the current password is what keeps a borrowed session (an unlocked laptop, a
    // stolen cookie) from choosing a new one: its guesses count like failed sign-ins.
    let account = throttle_key(&person.email);
    let source = source_addr(&req);
    if !first
        && !SignInLimits::attempt(&app.state, &account, source)
            .await
            .map_err(Internal::from)?
    {
        tracing::warn!(person = %person.email, client_ip = ?source, "console password change rate limited");
        let mut page = password_page(
            &person,
            first,
            Some("Too many attempts. Please wait a few minutes and try again."),
        )?;
        *page.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(page);
    }
    let current = form.current.unwrap_or_default();
    let new = form.password;
    let stored = user.password_hash.clone();
    let (current_ok, same_as_before, hash) = web::block(move || {
        let current_ok = current.chars().count() <= PASSWORD_CHARS.end() * 4
            && password_matches(&current, &stored);
        let same = password_matches(&new, &stored);
        (current_ok, same, hash_password(&new))
    })
    .await
    .map_err(anyhow::Error::from)?;
    if !first && !current_ok {
        return password_page(&person, first, Some("Your current password is not right."));
    }
    if !first {
        SignInLimits::succeeded(&app.state, &account, source)
            .await
            .map_err(Internal::from)?;
    }
    if same_as_before {
        return password_page(
            &person,
            first,
            Some("Choose a password other than the one you signed in with."),
        );
    }
    let hash = hash.map_err(anyhow::Error::from)?;
    if !app
        .store
        .set_console_password(&user.id, &user.password_hash, hash)
        .await?
    {
        return Err(PageError::Forbidden);
    }
    let Some(user) = app.store.console_user(&user.id).await? else {
        return Err(PageError::Forbidden);
    };
    session::end(&app, &person.session_hash).await?;
    let cookie = session::start(&app, &req, &user).await?;
    tracing::info!(person = %user.email, "console password set");
    let mut response = see_other("/console");
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    Ok(response)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf_token: String,
}

impl CsrfProtected for LogoutForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// Ends the session.
#[post("/logout")]
pub async fn logout(
    app: web::Data<App>,
    person: Person,
    _form: Checked<LogoutForm>,
) -> Result<HttpResponse, PageError> {
    let removal = session::end(&app, &person.session_hash).await?;
    let mut response = see_other("/console/login");
    response
        .add_removal_cookie(&removal)
        .map_err(anyhow::Error::from)?;
    Ok(response)
}
