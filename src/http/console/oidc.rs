//! Console sign-in through the workforce OpenID provider (`[console_login]`):
//! `GET /console/oidc/login` sends the browser there, `GET /console/oidc/callback` takes the
//! answer. The protocol is `crate::oidc`'s; who may enter is `crate::console::workforce`'s;
//! this file only moves cookies and redirects. Both routes answer 404 without `[console_login]`.

use super::gate::safe_next;
use super::session;
use crate::app::App;
use crate::console::workforce::{self, AdmitError, Refused};
use crate::error::{Internal, PageError};
use crate::http::pages::see_other;
use crate::http::session::{self as browser, CookieName};
use crate::oidc::{AuthorizationAnswer, RelyingParty};
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Where the provider sends the browser back; registered with the provider as
/// `{public_url}/console/oidc/callback`.
pub const CALLBACK_PATH: &str = "/console/oidc/callback";

fn relying_party(
    app: &App,
) -> Result<(&Arc<RelyingParty>, &crate::config::ConsoleLogin), PageError> {
    match (&app.console_login, &app.settings.console_login) {
        (Some(party), Some(settings)) => Ok((party, settings)),
        _ => Err(PageError::NotFound),
    }
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// Sends the browser to the provider, asking for a sign-in at most
/// `reauthenticate_after_minutes` old; the browser gets a cookie binding the sign-in to it.
#[get("/console/oidc/login")]
pub async fn start(
    app: web::Data<App>,
    req: HttpRequest,
    query: web::Query<StartQuery>,
) -> Result<HttpResponse, PageError> {
    let (party, settings) = relying_party(&app)?;
    let max_age = Duration::from_secs(u64::from(settings.reauthenticate_after_minutes) * 60);
    let next = safe_next(query.next.as_deref());
    browser::send_to_provider(
        &app,
        &req,
        party,
        CookieName::ConsoleOidc,
        Some(max_age),
        next,
    )
    .await
}

/// Completes the sign-in: a person in the required group gets a console session (their
/// account made on the first visit); anyone else a page that says why, and nothing else.
#[get("/console/oidc/callback")]
pub async fn callback(
    app: web::Data<App>,
    req: HttpRequest,
    query: web::Query<AuthorizationAnswer>,
) -> Result<HttpResponse, PageError> {
    let (party, settings) = relying_party(&app)?;
    let answer = query.into_inner();
    let binding = browser::read(&app, &req, CookieName::ConsoleOidc);
    let signed_in = party.finish(binding.as_deref(), &answer).await?;
    let user =
        match workforce::admit(&app.store, settings, &signed_in.claims, app.clock.now()).await {
            Ok(user) => user,
            Err(AdmitError::Store(e)) => return Err(Internal::from(e).into()),
            Err(AdmitError::Refused(refused)) => {
                tracing::warn!(reason = %refused, "console sign-in at the provider refused");
                return Err(PageError::Refused(refusal_message(refused).into()));
            }
        };
    if let Some(old) = session::current(&app, &req).await? {
        session::end(&app, &old.hash).await?;
    }
    tracing::info!(person = %user.email, "console sign-in through the provider");
    let cookie = session::start(&app, &req, &user).await?;
    let mut response = see_other(safe_next(signed_in.return_to.as_deref()));
    response.add_cookie(&cookie).map_err(anyhow::Error::from)?;
    response
        .add_removal_cookie(&browser::removal_cookie(&app, CookieName::ConsoleOidc))
        .map_err(anyhow::Error::from)?;
    Ok(response)
}

fn refusal_message(refused: Refused) -> &'static str {
    match refused {
        Refused::NotInGroup => {
            "You signed in, but your account is not in the group that may use the security \
             console. Ask your administrator for access."
        }
        Refused::NoEmail => {
            "The sign-in service did not share your e-mail address, which the security console \
             needs. Ask your administrator."
        }
        Refused::Disabled => "Your security console account is disabled.",
        Refused::EmailTaken => {
            "Another security console account has your e-mail address. Ask an administrator to \
             resolve it."
        }
    }
}
