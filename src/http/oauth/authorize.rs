//! `/oauth/authorize`: the sign-in and consent pages, and the customer's decision.

use crate::app::App;
use crate::domain::{FieldSet, Scope};
use crate::error::PageError;
use crate::http::pages::{form_origin, page, render, see_other};
use crate::http::portal::login::login_page;
use crate::http::portal::oidc;
use crate::http::portal::session::{self, stale_sign_in};
use crate::oauth::authorize::{self, AuthorizeParams, ParkError, Rejection};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Serialize;

#[derive(Serialize)]
struct FieldView<'a> {
    scope: String,
    label: &'a str,
    description: Option<&'a str>,
}

/// Starts an authorization: validates the request, then shows the sign-in page or the consent
/// page naming every requested field.
///
/// With `request_uri` (from `POST /oauth/par`), only it and `client_id` are read; the pushed
/// parameters apply. A partner registered with `--require-par`, and every partner when
/// `require_par = true`, must come that way (else `invalid_request` by redirect).
#[utoipa::path(
    tag = "oauth",
    operation_id = "authorize",
    params(AuthorizeParams),
    responses(
        (status = 200, description = "Sign-in or consent page (HTML)", content_type = "text/html"),
        (status = 303, description = "Error redirect to the registered redirect URI (RFC 6749 §4.1.2.1), with `state` and `iss`"),
        (status = 400, description = "Unknown client, unregistered redirect URI, or a `request_uri` that is unknown, expired, already used or another client's: an error page, never a redirect", content_type = "text/html"),
        (status = 429, description = "The customer has too many consent requests waiting", content_type = "text/html"),
    )
)]
#[get("/oauth/authorize")]
pub async fn start(
    app: web::Data<App>,
    req: HttpRequest,
    query: web::Query<AuthorizeParams>,
) -> Result<HttpResponse, PageError> {
    let request = match authorize::validate(&app, &query).await {
        Ok(request) => request,
        Err(Rejection::Page(e)) => return Err(e),
        Err(Rejection::Redirect(location)) => return Ok(see_other(&location)),
    };
    let next = format!("/oauth/authorize?{}", req.query_string());
    let active = match session::current(&app, &req).await? {
        Some(active) if session::recent_enough(&app, &active.session) => active,
        // With the insurer's provider: to it, for a sign-in recent enough to consent with.
        _ if oidc::provider_sign_in(&app).is_some() => {
            return oidc::send_to_provider(&app, &req, true, &next).await;
        }
        Some(active) => active,
        None => return login_page(&app, &next, Some(&request.partner.name), "", None),
    };
    let consent_id = authorize::park(&app, &request, active.session.customer_id)
        .await
        .map_err(|e| match e {
            ParkError::TooMany => PageError::TooMany(
                "You have started too many consent requests. Finish or close the others, then try again in a few minutes.".into(),
            ),
            ParkError::PushedRequestUsed => PageError::BadRequest(
                "This link was already used or has expired. Please start again from the partner's website or app.".into(),
            ),
            ParkError::Internal(internal) => PageError::Internal(internal),
        })?;
    let fields: Vec<FieldView> = request
        .scopes
        .iter()
        .filter_map(|scope| app.catalog.field(scope))
        .map(|f| FieldView {
            scope: f.scope.to_string(),
            label: &f.label,
            description: f.description.as_deref(),
        })
        .collect();
    let body = render(
        "consent.html",
        minijinja::context! {
            partner_name => request.partner.name,
            fields,
            consent_id,
            csrf_token => active.session.csrf_token,
            lifetime_days => app.settings.grant_lifetime_days,
        },
    )?;
    Ok(page(
        StatusCode::OK,
        body,
        form_origin(&request.redirect_uri).as_deref(),
    ))
}

/// The customer's decision on the consent page: `decision=allow|deny`, the ticked `field`s,
/// `consent_id` and `csrf_token`. Answers `303` to the partner's redirect URI with `code`,
/// `state` and `iss`, or with `error=access_denied`.
#[utoipa::path(
    tag = "oauth",
    operation_id = "consent_decision",
    request_body(content = crate::http::oauth::forms::ConsentDecisionForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the partner with a code or access_denied"),
        (status = 403, description = "Missing or wrong CSRF token, no session, or a used/expired consent", content_type = "text/html"),
    )
)]
#[post("/oauth/authorize")]
pub async fn decide(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let mut consent_id = None;
    let mut csrf_token = None;
    let mut decision = None;
    let mut fields = Vec::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "consent_id" => consent_id = Some(value.into_owned()),
            "csrf_token" => csrf_token = Some(value.into_owned()),
            "decision" => decision = Some(value.into_owned()),
            "field" => fields.push(value.into_owned()),
            _ => {}
        }
    }
    let active = session::current(&app, &req)
        .await?
        .ok_or(PageError::Forbidden)?;
    if !active.csrf_matches(csrf_token.as_deref()) {
        tracing::warn!("consent decision without a valid CSRF token");
        return Err(PageError::Forbidden);
    }
    if !session::recent_enough(&app, &active.session) {
        // The consent page was shown after a fresh sign-in that has aged since; the request
        // stays parked for the customer to start again from the partner.
        return Err(stale_sign_in());
    }
    // Looked up under the signed-in customer: another customer's id finds nothing and leaves
    // the request to its owner.
    let customer = active.session.customer_id;
    let pending = match consent_id {
        // Ours are 43 characters; nothing longer is looked up.
        Some(id) if id.len() <= 64 => app.state.take_pending_consent(customer, &id).await?,
        _ => None,
    };
    let pending = pending
        .filter(|p| p.customer_id == customer)
        .ok_or(PageError::Forbidden)?;

    let selected = fields
        .iter()
        .map(|f| f.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PageError::BadRequest("The form was not filled in correctly.".into()))?;
    let selected = FieldSet::from_scopes(selected);
    let location = match decision.as_deref() {
        Some("allow") if !selected.is_empty() => {
            authorize::approve(&app, &pending, &selected).await?
        }
        Some("allow") | Some("deny") => authorize::deny(&app, &pending),
        _ => {
            return Err(PageError::BadRequest("Please choose Allow or Deny.".into()));
        }
    };
    Ok(see_other(&location))
}
