//! One grant (`/console/grants/{id}`): its fields, timeline, reads, and revocation with a
//! reason (`revoked_by` is `security_team`).

use super::access_log::Row;
use super::actions::{ReasonForm, record_reason};
use super::form::Checked;
use super::gate::Person;
use super::view::{self, PersonView};
use crate::access_log::LogFilter;
use crate::admin::views::grant_views;
use crate::app::App;
use crate::domain::GrantId;
use crate::error::PageError;
use crate::http::pages::{page, render, see_other};
use crate::oauth::grants;
use crate::store::{Grant, GrantState, RevokedBy};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use serde::Serialize;

/// Reads shown on a grant's page; the access-log search has the rest.
const RECENT_READS: u64 = 20;

async fn known(app: &App, id: &str) -> Result<Grant, PageError> {
    let id = GrantId::parse(id).map_err(|_| PageError::NotFound)?;
    app.store.grant(id).await?.ok_or(PageError::NotFound)
}

#[derive(Serialize)]
struct Event {
    at: String,
    what: String,
}

/// What happened to a grant, oldest first.
fn timeline(grant: &Grant, last_read: Option<chrono::DateTime<chrono::Utc>>) -> Vec<Event> {
    let mut events = vec![(grant.created_at, "Consent given; grant created".to_owned())];
    if let Some(at) = grant.code_redeemed_at {
        events.push((at, "Authorization code exchanged for tokens".into()));
    }
    if let Some(at) = last_read {
        events.push((at, "Last read of data".into()));
    }
    if let GrantState::Revoked { at, by } = grant.state {
        events.push((at, format!("Revoked (by {})", by.as_str())));
    }
    events.push((grant.expires_at, "Expires".into()));
    events.sort_by_key(|(at, _)| *at);
    events
        .into_iter()
        .map(|(at, what)| Event {
            at: view::time(at),
            what,
        })
        .collect()
}

#[get("/grants/{id}")]
pub async fn show(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let grant = known(&app, &path).await?;
    let usage = app
        .store
        .grant_usage(&[grant.id.to_string()])
        .await?
        .remove(&grant.id.to_string())
        .unwrap_or_default();
    let events = timeline(&grant, usage.last_read);
    let filter = LogFilter {
        grant_id: Some(grant.id),
        ..Default::default()
    };
    app.access_log.settled().await;
    let reads: Vec<Row> = app
        .store
        .search_access_log(&filter, None, RECENT_READS)
        .await?
        .iter()
        .map(Row::from)
        .collect();
    let revocable = grant.is_usable_at(app.clock.now());
    let grant_view = grant_views(&app, vec![grant])
        .await?
        .pop()
        .ok_or(PageError::NotFound)?;
    let body = render(
        "console/grant.html",
        minijinja::context! {
            person => PersonView::of(&person),
            grant => grant_view, events, reads, reads_total => usage.reads, revocable,
        },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

fn confirm_page(
    person: &Person,
    grant: &Grant,
    error: Option<&str>,
) -> Result<HttpResponse, PageError> {
    let body = render(
        "console/confirm.html",
        minijinja::context! {
            person => PersonView::of(person),
            title => format!("Revoke grant {}", grant.id),
            action => "revoke",
            post_to => format!("/console/grants/{}/revoke", grant.id),
            cancel_to => format!("/console/grants/{}", grant.id),
            consequence => "The partner's tokens for this grant stop working at once, on every instance, and cannot be renewed. The customer sees it ended by the security team. This cannot be undone.",
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

#[get("/grants/{id}/revoke")]
pub async fn confirm_revoke(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let grant = known(&app, &path).await?;
    confirm_page(&person, &grant, None)
}

#[post("/grants/{id}/revoke")]
pub async fn revoke(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
    form: Checked<ReasonForm>,
) -> Result<HttpResponse, PageError> {
    let grant = known(&app, &path).await?;
    let reason = match form.0.reason() {
        Ok(reason) => reason,
        Err(problem) => return confirm_page(&person, &grant, Some(&problem)),
    };
    record_reason(&app, &person, reason).await?;
    grants::revoke(&app, grant.id, RevokedBy::SecurityTeam).await?;
    Ok(see_other(&format!("/console/grants/{}", grant.id)))
}
