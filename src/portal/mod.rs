//! The customer portal's logic: a customer's grants and their access history, in the words a
//! customer understands. Every lookup is scoped to the signed-in customer: another customer's
//! grant id is answered exactly like an unknown one.

use crate::access_log::{ChainedRecord, Outcome};
use crate::app::App;
use crate::domain::{ClientId, CustomerId, GrantId};
use crate::error::{Internal, PageError};
use crate::state::{SharedState, StateError};
use crate::store::{Grant, GrantState, GrantUsage, RevokedBy};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub mod provider;

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

impl ExportRow {
    pub const HEADER: [&'static str; 8] = [
        "at",
        "partner",
        "grant_id",
        "resource",
        "record_id",
        "records_disclosed",
        "fields_disclosed",
        "outcome",
    ];

    /// The row's cells in [`Self::HEADER`]'s order, for the CSV writer.
    pub fn cells(&self) -> [String; 8] {
        [
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.partner.clone(),
            self.grant_id.clone().unwrap_or_default(),
            self.resource.clone(),
            self.record_id.clone().unwrap_or_default(),
            self.records_disclosed.clone(),
            self.fields_disclosed.clone(),
            self.outcome.to_owned(),
        ]
    }
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
    app.access_log.settled().await;
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
    app.access_log.settled().await;
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
    app.access_log.settled().await;
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

/// Failed sign-ins, each counted until `WINDOW` after the latest one: at most 5 for one account
/// from one source address (guessing a password is slow, a person who mistypes waits a few
/// minutes), 50 for one account from everywhere (guessing from many addresses is slow too), and
/// 30 from one address for any accounts (spraying is slow). An attacker at one address thus locks
/// only itself out of an account, not the customer at theirs. Successes count for nothing, so
/// customers behind one carrier NAT do not lock each other out. The counts live in shared state:
/// instances do not multiply the allowance.
pub struct SignInLimits;

impl SignInLimits {
    pub const WINDOW: Duration = Duration::from_secs(5 * 60);
    pub const PER_ACCOUNT_AND_ADDRESS: u64 = 5;
    pub const PER_ACCOUNT: u64 = 50;
    pub const PER_ADDRESS: u64 = 30;

    /// Accounts are keyed by a hash of the normalised address: no e-mail in shared state.
    fn account(email: &str) -> String {
        crate::secrets::token_hash(&email.trim().to_lowercase())
    }

    /// Counts this attempt first, then answers whether it may go on: false when the account
    /// or the address is past its failures. Counting before the password check means parallel
    /// guesses cannot all pass one check.
    pub async fn attempt(
        state: &SharedState,
        email: &str,
        source: Option<IpAddr>,
    ) -> Result<bool, StateError> {
        let counts = state
            .count_sign_in_attempt(&Self::account(email), source, Self::WINDOW)
            .await?;
        Ok(counts.pair <= Self::PER_ACCOUNT_AND_ADDRESS
            && counts.account <= Self::PER_ACCOUNT
            && counts.address <= Self::PER_ADDRESS)
    }

    /// The attempt succeeded: it does not count.
    pub async fn succeeded(
        state: &SharedState,
        email: &str,
        source: Option<IpAddr>,
    ) -> Result<(), StateError> {
        state
            .forgive_sign_in_attempt(&Self::account(email), source)
            .await
    }
}
