//! The customer portal's logic: a customer's grants and their access history, in the words a
//! customer understands. Every lookup is scoped to the signed-in customer: another customer's
//! grant id is answered exactly like an unknown one.

use crate::access_log::{ChainedRecord, Outcome};
use crate::app::App;
use crate::domain::{ClientId, CustomerId, GrantId};
use crate::error::{Internal, PageError};
use crate::store::{Grant, GrantState, GrantUsage, RevokedBy};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// History rows per page.
pub const PAGE: u64 = 50;

#[derive(Debug, Serialize)]
pub struct GrantView {
    pub id: String,
    pub partner: String,
    pub fields: Vec<String>,
    pub granted_on: String,
    pub expires_on: String,
    pub last_used: Option<String>,
    pub reads: u64,
    pub active: bool,
    /// For past grants: how and when it ended, in plain words.
    pub ended: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub when: String,
    pub partner: String,
    pub what: String,
    pub fields: Vec<String>,
    pub refused: bool,
}

/// One row of the downloadable access history (CSV and JSON).
#[derive(Debug, Serialize)]
pub struct ExportRow {
    pub at: DateTime<Utc>,
    pub partner: String,
    pub grant_id: Option<String>,
    pub resource: String,
    pub record_id: Option<String>,
    pub records_disclosed: String,
    pub fields_disclosed: String,
    pub outcome: &'static str,
}

pub fn day(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y").to_string()
}

fn moment(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

async fn partner_names(
    app: &App,
    clients: impl Iterator<Item = String>,
) -> Result<HashMap<String, String>, Internal> {
    let mut names = HashMap::new();
    for client in clients {
        if names.contains_key(&client) {
            continue;
        }
        let name = match ClientId::parse(&client) {
            Ok(id) => app.store.partner(&id).await?.map(|p| p.name),
            Err(_) => None,
        };
        names.insert(client.clone(), name.unwrap_or(client));
    }
    Ok(names)
}

fn label(app: &App, scope: &str) -> String {
    scope
        .parse()
        .ok()
        .and_then(|s| app.catalog.field(&s))
        .map(|f| f.label.clone())
        .unwrap_or_else(|| scope.to_owned())
}

fn ended(grant: &Grant, partner: &str, now: DateTime<Utc>) -> Option<String> {
    match grant.state {
        GrantState::Revoked { at, by } => Some(match by {
            RevokedBy::Customer => format!("You ended this on {}.", day(at)),
            RevokedBy::SecurityTeam => {
                format!("Harmony's security team ended this on {}.", day(at))
            }
            RevokedBy::Partner => format!("{partner} gave up this access on {}.", day(at)),
            RevokedBy::RefreshTokenReuse | RevokedBy::CodeReuse => {
                format!("Ended automatically on {} after a security check.", day(at))
            }
        }),
        GrantState::Active if grant.expires_at <= now => {
            Some(format!("Expired on {}.", day(grant.expires_at)))
        }
        GrantState::Active => None,
    }
}

pub async fn overview(app: &App, customer: CustomerId) -> Result<Vec<GrantView>, Internal> {
    let grants = app.store.grants_of_customer(customer).await?;
    let ids: Vec<String> = grants.iter().map(|g| g.id.to_string()).collect();
    let usage = app.store.grant_usage(&ids).await?;
    let names = partner_names(app, grants.iter().map(|g| g.client_id.to_string())).await?;
    let now = app.clock.now();
    Ok(grants
        .iter()
        .map(|grant| {
            let partner = names
                .get(grant.client_id.as_str())
                .cloned()
                .unwrap_or_default();
            let used = usage
                .get(&grant.id.to_string())
                .copied()
                .unwrap_or_default();
            view(app, grant, partner, used, now)
        })
        .collect())
}

fn view(
    app: &App,
    grant: &Grant,
    partner: String,
    used: GrantUsage,
    now: DateTime<Utc>,
) -> GrantView {
    GrantView {
        id: grant.id.to_string(),
        fields: grant
            .scopes
            .iter()
            .map(|s| label(app, &s.to_string()))
            .collect(),
        granted_on: day(grant.created_at),
        expires_on: day(grant.expires_at),
        last_used: used.last_read.map(moment),
        reads: used.reads,
        active: grant.is_usable_at(now),
        ended: ended(grant, &partner, now),
        partner,
    }
}

/// The customer's own grant, or `NotFound` (also for another customer's grant).
pub async fn own_grant(app: &App, customer: CustomerId, id: &str) -> Result<Grant, PageError> {
    let id = GrantId::parse(id).map_err(|_| PageError::NotFound)?;
    match app.store.grant(id).await? {
        Some(grant) if grant.customer_id == customer => Ok(grant),
        _ => Err(PageError::NotFound),
    }
}

pub async fn grant_view(app: &App, grant: &Grant) -> Result<GrantView, Internal> {
    let ids = [grant.id.to_string()];
    let used = app
        .store
        .grant_usage(&ids)
        .await?
        .remove(&ids[0])
        .unwrap_or_default();
    let names = partner_names(app, std::iter::once(grant.client_id.to_string())).await?;
    let partner = names.into_values().next().unwrap_or_default();
    Ok(view(app, grant, partner, used, app.clock.now()))
}

fn describe(app: &App, record: &ChainedRecord, partner: &str) -> HistoryRow {
    let r = &record.record;
    let target = match &r.resource_id {
        Some(id) => format!("{} {id}", r.resource),
        None => format!("the list of your {}", r.resource),
    };
    let refused = !matches!(r.outcome, Outcome::Ok | Outcome::NotModified);
    let what = if refused {
        format!("{partner} tried to read {target}: refused")
    } else {
        format!("{partner} read {target}")
    };
    HistoryRow {
        when: moment(r.at),
        partner: partner.to_owned(),
        what,
        fields: r.fields.iter().map(|f| label(app, f)).collect(),
        refused,
    }
}

/// One page of a grant's history, newest first, and the cursor of the next page.
pub async fn history(
    app: &App,
    grant: &Grant,
    partner: &str,
    before: Option<i64>,
) -> Result<(Vec<HistoryRow>, Option<i64>), Internal> {
    let records = app
        .store
        .access_log_of_grants(&[grant.id.to_string()], before, PAGE + 1)
        .await?;
    let more = records.len() as u64 > PAGE;
    let page: Vec<&ChainedRecord> = records.iter().take(PAGE as usize).collect();
    let next = if more {
        page.last().map(|r| r.id)
    } else {
        None
    };
    Ok((
        page.iter().map(|r| describe(app, r, partner)).collect(),
        next,
    ))
}

/// Everything the log holds about the customer's grants, for the right of access.
pub async fn export(app: &App, customer: CustomerId) -> Result<Vec<ExportRow>, Internal> {
    let grants = app.store.grants_of_customer(customer).await?;
    let ids: Vec<String> = grants.iter().map(|g| g.id.to_string()).collect();
    let names = partner_names(app, grants.iter().map(|g| g.client_id.to_string())).await?;
    let mut rows = Vec::new();
    let mut before = None;
    loop {
        let page = app.store.access_log_of_grants(&ids, before, 1000).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for record in page {
            let r = record.record;
            let client = r.client_id.clone().unwrap_or_default();
            rows.push(ExportRow {
                at: r.at,
                partner: names.get(&client).cloned().unwrap_or(client),
                grant_id: r.grant_id,
                resource: r.resource,
                record_id: r.resource_id,
                records_disclosed: r.record_ids.join(" "),
                fields_disclosed: r.fields.join(" "),
                outcome: r.outcome.as_str(),
            });
        }
    }
    Ok(rows)
}

/// Sign-in attempts: 5 a minute per e-mail address (guessing one account's password is slow,
/// a person who mistypes is not locked out for long) and 30 a minute per client address
/// (spraying many accounts from one place is slow). The address is the one the client or its
/// proxy reports; a forged one only escapes the second limit, never the first.
pub struct LoginLimiter {
    by_email: governor::DefaultKeyedRateLimiter<String>,
    by_address: governor::DefaultKeyedRateLimiter<String>,
}

fn per_minute(n: u32) -> governor::Quota {
    governor::Quota::per_minute(std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN))
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            by_email: governor::RateLimiter::keyed(per_minute(5)),
            by_address: governor::RateLimiter::keyed(per_minute(30)),
        }
    }
}

impl LoginLimiter {
    /// False when either the address or the e-mail has used up its attempts.
    pub fn allow(&self, email: &str, client_ip: Option<&str>) -> bool {
        for limiter in [&self.by_email, &self.by_address] {
            if limiter.len() > 100_000 {
                limiter.retain_recent();
            }
        }
        let by_email = self
            .by_email
            .check_key(&email.trim().to_lowercase())
            .is_ok();
        let by_address =
            client_ip.is_none_or(|ip| self.by_address.check_key(&ip.to_owned()).is_ok());
        by_email && by_address
    }
}
