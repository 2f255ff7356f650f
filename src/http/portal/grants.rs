//! The portal's grant pages: the overview, one grant's history, revocation, and the download
//! of the whole access history.

use super::session::{self, ActiveSession};
use crate::app::App;
use crate::error::PageError;
use crate::http::csv::CsvWriter;
use crate::http::pages::{page, render, see_other};
use crate::oauth::grants;
use crate::portal;
use crate::store::RevokedBy;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;

/// The signed-in customer, or a redirect to the sign-in page.
async fn signed_in(
    app: &App,
    req: &HttpRequest,
) -> Result<Result<ActiveSession, HttpResponse>, PageError> {
    Ok(match session::current(app, req).await? {
        Some(active) => Ok(active),
        None => Err(see_other(&format!(
            "/portal/login?next={}",
            percent_encoding::utf8_percent_encode(req.path(), percent_encoding::NON_ALPHANUMERIC)
        ))),
    })
}

macro_rules! require_session {
    ($app:expr, $req:expr) => {
        match signed_in($app, $req).await? {
            Ok(active) => active,
            Err(redirect) => return Ok(redirect),
        }
    };
}

/// The signed-in customer whose sign-in is recent enough to revoke or download
/// (`session::recent_enough`); otherwise a trip to the provider that comes back here.
macro_rules! require_recent_session {
    ($app:expr, $req:expr) => {{
        let active = require_session!($app, $req);
        if !session::recent_enough($app, &active.session) {
            let here = match $req.query_string() {
                "" => $req.path().to_owned(),
                query => format!("{}?{query}", $req.path()),
            };
            return super::oidc::send_to_provider($app, $req, true, &here).await;
        }
        active
    }};
}

/// Active and past grants, in plain language.
#[get("/portal")]
pub async fn overview(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, PageError> {
    let active = require_session!(&app, &req);
    let customer = app
        .store
        .customer(active.session.customer_id)
        .await?
        .ok_or(PageError::Forbidden)?;
    let grants = portal::overview(&app, customer.id).await?;
    let greeting = active
        .session
        .display_name
        .as_deref()
        .or(customer.email_address())
        .unwrap_or(customer.upstream_id.as_str());
    let body = render(
        "portal.html",
        minijinja::context! { email => greeting, grants, csrf_token => active.session.csrf_token },
    )?;
    // Its sign-out form may be answered with a redirect to the provider's end-session page.
    let provider = super::oidc::sign_out_targets(&app);
    Ok(page(StatusCode::OK, body, provider.as_deref()))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    before: Option<i64>,
    revoked: Option<u8>,
}

/// One grant and its access history, newest first, paginated.
#[get("/portal/grants/{id}")]
pub async fn show(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, PageError> {
    let active = require_session!(&app, &req);
    let grant = portal::own_grant(&app, active.session.customer_id, &id).await?;
    let g = portal::grant_view(&app, &grant).await?;
    let (rows, next) = portal::history(&app, &grant, &g.partner, query.before).await?;
    let notice = query
        .revoked
        .map(|_| format!("Done: {} can no longer see your information.", g.partner));
    let body = render(
        "grant.html",
        minijinja::context! { g, rows, next, before => query.before, notice },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

/// Asks for confirmation before revoking.
#[get("/portal/grants/{id}/revoke")]
pub async fn confirm_revoke(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let active = require_recent_session!(&app, &req);
    let grant = portal::own_grant(&app, active.session.customer_id, &id).await?;
    let g = portal::grant_view(&app, &grant).await?;
    let body = render(
        "revoke.html",
        minijinja::context! { g, csrf_token => active.session.csrf_token },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf_token: Option<String>,
}

/// Ends the grant; it takes effect (in shared state) before this answers.
#[post("/portal/grants/{id}/revoke")]
pub async fn revoke(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let active = session::current(&app, &req)
        .await?
        .ok_or(PageError::Forbidden)?;
    if !active.csrf_matches(form.csrf_token.as_deref()) {
        return Err(PageError::Forbidden);
    }
    if !session::recent_enough(&app, &active.session) {
        return Err(session::stale_sign_in());
    }
    let grant = portal::own_grant(&app, active.session.customer_id, &id).await?;
    grants::revoke(&app, grant.id, RevokedBy::Customer).await?;
    Ok(see_other(&format!("/portal/grants/{}?revoked=1", grant.id)))
}

/// The customer's whole access history as CSV (the right of access).
#[get("/portal/access-history.csv")]
pub async fn export_csv(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, PageError> {
    let active = require_recent_session!(&app, &req);
    let rows = portal::export(&app, active.session.customer_id).await?;
    let mut writer = CsvWriter::with_capacity(rows.len() * 128);
    writer
        .row(portal::ExportRow::HEADER)
        .map_err(anyhow::Error::from)?;
    for row in &rows {
        writer
            .row(row.cells().iter().map(String::as_str))
            .map_err(anyhow::Error::from)?;
    }
    let body = writer.into_bytes().map_err(anyhow::Error::from)?;
    Ok(download(
        body,
        "text/csv; charset=utf-8",
        "access-history.csv",
    ))
}

/// The same history as JSON.
#[get("/portal/access-history.json")]
pub async fn export_json(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, PageError> {
    let active = require_recent_session!(&app, &req);
    let rows = portal::export(&app, active.session.customer_id).await?;
    let body = serde_json::to_vec_pretty(&rows).map_err(anyhow::Error::from)?;
    Ok(download(body, "application/json", "access-history.json"))
}

fn download(body: Vec<u8>, content_type: &str, name: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}
