//! Partners (`/console/partners`, `/console/partners/{client_id}`): status, active grants,
//! reads and refusals, rate settings; suspension and reinstatement behind a confirmation page
//! that asks for a reason.

use super::actions::{ReasonForm, record_reason};
use super::form::Checked;
use super::gate::Person;
use super::view::{self, PersonView};
use crate::admin::views::PartnerView;
use crate::app::App;
use crate::domain::ClientId;
use crate::error::PageError;
use crate::http::pages::{page, render, see_other};
use crate::oauth::grants;
use crate::store::{Partner, PartnerStatus};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use serde::Serialize;

#[derive(Serialize)]
struct PartnerRow {
    #[serde(flatten)]
    view: PartnerView,
    active_grants: u64,
}

#[get("/partners")]
pub async fn list(app: web::Data<App>, person: Person) -> Result<HttpResponse, PageError> {
    let counts = app.store.active_grant_counts(app.clock.now()).await?;
    let partners: Vec<PartnerRow> = app
        .store
        .partners()
        .await?
        .into_iter()
        .map(|p| PartnerRow {
            active_grants: counts.get(p.client_id.as_str()).copied().unwrap_or(0),
            view: p.into(),
        })
        .collect();
    let body = render(
        "console/partners.html",
        minijinja::context! { person => PersonView::of(&person), partners },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

/// An id from the path that names a registered partner; anything else is "not found".
pub async fn known(app: &App, client_id: &str) -> Result<Partner, PageError> {
    let client = ClientId::parse(client_id).map_err(|_| PageError::NotFound)?;
    app.store.partner(&client).await?.ok_or(PageError::NotFound)
}

#[get("/partners/{client_id}")]
pub async fn show(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let partner = known(&app, &path).await?;
    app.access_log.settled().await;
    let now = app.clock.now();
    let active_grants = app
        .store
        .active_grant_counts(now)
        .await?
        .get(partner.client_id.as_str())
        .copied()
        .unwrap_or(0);
    let recent = app
        .store
        .search_grants(
            &crate::store::GrantFilter {
                client_id: Some(partner.client_id.clone()),
                ..Default::default()
            },
            now,
            None,
            20,
        )
        .await?;
    let recent = crate::admin::views::grant_views(&app, recent).await?;
    let charts = super::overview::partner_charts(&app, &partner.client_id).await?;
    let body = render(
        "console/partner.html",
        minijinja::context! {
            person => PersonView::of(&person),
            partner => PartnerView::from(partner),
            active_grants, recent, charts,
            defaults => minijinja::context! {
                per_second => app.settings.rate_limits.partner_per_second,
                burst => app.settings.rate_limits.partner_burst,
                grant_per_second => app.settings.rate_limits.grant_per_second,
                grant_burst => app.settings.rate_limits.grant_burst,
            },
        },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

/// Suspend or reinstate: the page that asks for confirmation and a reason.
fn confirm_page(
    person: &Person,
    partner: Partner,
    target: PartnerStatus,
    error: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let action = match target {
        PartnerStatus::Suspended => "suspend",
        PartnerStatus::Active => "reinstate",
    };
    let body = render(
        "console/confirm.html",
        minijinja::context! {
            person => PersonView::of(person),
            title => format!("{} {}", view::capitalised(action), partner.name),
            action,
            post_to => format!("/console/partners/{}/{action}", partner.client_id),
            cancel_to => format!("/console/partners/{}", partner.client_id),
            consequence => match target {
                PartnerStatus::Suspended => "Every call with any of its tokens is refused at once, on every instance. Its grants stay on record and work again if it is reinstated.",
                PartnerStatus::Active => "Its unexpired grants and tokens work again at once.",
            },
            error,
        },
    )?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(status, body, None))
}

async fn confirm(
    app: &App,
    person: &Person,
    client_id: &str,
    target: PartnerStatus,
) -> Result<HttpResponse, PageError> {
    let partner = known(app, client_id).await?;
    confirm_page(person, partner, target, None)
}

async fn apply(
    app: &App,
    person: &Person,
    client_id: &str,
    target: PartnerStatus,
    form: &ReasonForm,
) -> Result<HttpResponse, PageError> {
    let partner = known(app, client_id).await?;
    let reason = match form.reason() {
        Ok(reason) => reason,
        Err(problem) => return confirm_page(person, partner, target, Some(&problem)),
    };
    record_reason(app, person, reason).await?;
    grants::set_partner_status(app, &partner.client_id, target).await?;
    let back: String =
        url::form_urlencoded::byte_serialize(partner.client_id.as_str().as_bytes()).collect();
    Ok(see_other(&format!("/console/partners/{back}")))
}

#[get("/partners/{client_id}/suspend")]
pub async fn confirm_suspend(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    confirm(&app, &person, &path, PartnerStatus::Suspended).await
}

#[post("/partners/{client_id}/suspend")]
pub async fn suspend(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
    form: Checked<ReasonForm>,
) -> Result<HttpResponse, PageError> {
    apply(&app, &person, &path, PartnerStatus::Suspended, &form.0).await
}

#[get("/partners/{client_id}/reinstate")]
pub async fn confirm_reinstate(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    confirm(&app, &person, &path, PartnerStatus::Active).await
}

#[post("/partners/{client_id}/reinstate")]
pub async fn reinstate(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
    form: Checked<ReasonForm>,
) -> Result<HttpResponse, PageError> {
    apply(&app, &person, &path, PartnerStatus::Active, &form.0).await
}
