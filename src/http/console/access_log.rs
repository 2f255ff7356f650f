//! The access-log search (`/console/access-log`): the API's filters as a form, cursor paging,
//! CSV export of the same query, and the page of one record with its place in the chain.

use super::gate::Person;
use super::view::{self, PersonView};
use crate::access_log::query::{self, RawLogQuery};
use crate::access_log::{ChainedRecord, Cursor, LogFilter, Outcome};
use crate::app::App;
use crate::error::PageError;
use crate::http::pages::{page, render};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Serialize;

/// Records per page in the browser: enough to scan, small enough to render at once.
const PAGE: u64 = 50;

/// The filters a search form can hold, in the order the form shows them.
const FILTERS: [&str; 8] = [
    "client_id",
    "customer_id",
    "grant_id",
    "resource",
    "field",
    "outcome",
    "from",
    "to",
];

/// A form sends every field, empty ones too: those are no filter. Anything else goes to the
/// same parser as the API's, so the console accepts exactly what the API does.
fn search_query(req: &HttpRequest) -> Result<(RawLogQuery, Vec<(String, String)>), PageError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| PageError::BadRequest("The search is not a valid query.".into()))?;
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.trim().to_owned()))
        .collect();
    let encoded = serde_urlencoded::to_string(&kept).map_err(anyhow::Error::from)?;
    let raw: RawLogQuery = serde_urlencoded::from_str(&encoded)
        .map_err(|e| PageError::BadRequest(format!("The search is not valid: {e}")))?;
    Ok((raw, kept))
}

#[derive(Serialize)]
pub struct Row {
    id: i64,
    at: String,
    client_id: Option<String>,
    grant_id: Option<String>,
    customer_id: Option<String>,
    resource: String,
    resource_id: Option<String>,
    fields: String,
    outcome: &'static str,
    refused: bool,
    status: u16,
}

impl From<&ChainedRecord> for Row {
    fn from(r: &ChainedRecord) -> Self {
        let rec = &r.record;
        Self {
            id: r.id,
            at: view::time(rec.at),
            client_id: rec.client_id.clone(),
            grant_id: rec.grant_id.clone(),
            customer_id: rec.customer_id.clone(),
            resource: rec.resource.clone(),
            resource_id: rec.resource_id.clone(),
            fields: rec.fields.join(", "),
            outcome: rec.outcome.as_str(),
            refused: !matches!(rec.outcome, Outcome::Ok | Outcome::NotModified),
            status: rec.status,
        }
    }
}

/// The search page; with a malformed filter, the form again with the error and no results.
#[get("/access-log")]
pub async fn search(
    app: web::Data<App>,
    person: Person,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let (raw, kept) = search_query(&req)?;
    let values: std::collections::BTreeMap<&str, &str> = kept
        .iter()
        .filter(|(k, _)| FILTERS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    let filter_query: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, *v)).collect();
    let export_query = serde_urlencoded::to_string(&filter_query).map_err(anyhow::Error::from)?;
    let parsed = LogFilter::parse(&raw).and_then(|filter| {
        let before = raw.cursor.as_deref().map(Cursor::decode).transpose()?;
        Ok((filter, before))
    });
    let (rows, next, error, status) = match parsed {
        Ok((filter, before)) => {
            app.access_log.settled().await;
            let mut records = app
                .store
                .search_access_log(&filter, before.map(|c| c.0), PAGE + 1)
                .await?;
            let next = (records.len() as u64 > PAGE).then(|| {
                records.truncate(PAGE as usize);
                let mut next = filter_query.clone();
                let cursor = records
                    .last()
                    .map(|r| Cursor(r.id).encode())
                    .unwrap_or_default();
                next.push(("cursor", cursor.as_str()));
                serde_urlencoded::to_string(&next).unwrap_or_default()
            });
            let rows: Vec<Row> = records.iter().map(Row::from).collect();
            (rows, next, None, StatusCode::OK)
        }
        Err(e) => (
            Vec::new(),
            None,
            Some(e.to_string()),
            StatusCode::BAD_REQUEST,
        ),
    };
    let body = render(
        "console/access_log.html",
        minijinja::context! {
            person => PersonView::of(&person), values, outcomes, rows, next, export => export_query, error,
            paged => raw.cursor.is_some(),
        },
    )?;
    Ok(page(status, body, None))
}

/// "Export CSV": every record the same filters match, streamed.
#[get("/access-log/export.csv")]
pub async fn export(
    app: web::Data<App>,
    _person: Person,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let (raw, _) = search_query(&req)?;
    let filter = LogFilter::parse(&raw).map_err(|e| PageError::BadRequest(e.to_string()))?;
    let before = raw
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(|e| PageError::BadRequest(e.to_string()))?
        .map(|c| c.0);
    if let Some(limit) = raw.limit {
        query::page_limit(Some(limit.min(query::MAX_LIMIT)))
            .map_err(|e| PageError::BadRequest(e.to_string()))?;
    }
    app.access_log.settled().await;
    Ok(crate::http::admin::csv_export(
        app.into_inner(),
        filter,
        before,
        raw.limit,
    ))
}

#[derive(Serialize)]
struct Coverage {
    seq: i64,
    signed_at: String,
    kid: String,
}

/// One record: its contents, its hash and the previous one, and the checkpoint that signs it
/// (or that it is in the unsigned tail).
#[get("/access-log/{id}")]
pub async fn record(
    app: web::Data<App>,
    person: Person,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let id: i64 = path
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(PageError::NotFound)?;
    let record = app
        .store
        .access_log_record(id)
        .await?
        .ok_or(PageError::NotFound)?;
    let coverage = app
        .store
        .covering_checkpoint(&record.chain, record.seq)
        .await?
        .map(|c| Coverage {
            seq: c.seq,
            signed_at: view::time(c.signed_at),
            kid: c.kid,
        });
    let body = render(
        "console/record.html",
        minijinja::context! {
            person => PersonView::of(&person),
            row => Row::from(&record),
            chain => &record.chain,
            seq => record.seq,
            hash => &record.hash,
            prev_hash => &record.prev_hash,
            request_id => &record.record.request_id,
            record_ids => record.record.record_ids.join(", "),
            client_ip => &record.record.client_ip,
            coverage,
        },
    )?;
    Ok(page(StatusCode::OK, body, None))
}
