//! A few days of made-up partner traffic for the demo, so the security console's charts and
//! alerts show something on first start: a second partner (a repairer), grants of both demo
//! customers to both partners, reads in office hours, a few refusals, and — in the last hour —
//! the repairer asking for fields beyond its grants, which fires the `beyond_grants` alert.
//! The records go through the real access-log writer (chained, durable), once: a log that
//! already holds records is left alone.

use crate::access_log::{AccessRecord, Outcome};
use crate::app::App;
use crate::cli::{PartnerAdd, add_partner};
use crate::domain::{ClientId, FieldSet, UpstreamCustomerId};
use crate::store::Grant;
use chrono::{DateTime, Duration, Timelike, Utc};

pub const REPAIRER_CLIENT_ID: &str = "quick-fix-repairs";
pub const DAYS: i64 = 3;

/// A tiny deterministic generator (xorshift): the same demo every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn repairer(app: &App) -> anyhow::Result<ClientId> {
    let client_id = ClientId::parse(REPAIRER_CLIENT_ID)?;
    if app.store.partner(&client_id).await?.is_none() {
        let add = PartnerAdd {
            name: "Quick Fix Repairs".into(),
            redirect_uris: vec![format!("{}/demo/callback", app.issuer())],
            fields: vec!["claims:status".into(), "claims:repair_stage".into()],
            client_id: Some(REPAIRER_CLIENT_ID.into()),
            rate: None,
            burst: None,
            grant_rate: None,
            ..Default::default()
        };
        add_partner(&app.store, &app.catalog, &add).await?;
    }
    Ok(client_id)
}

fn record(
    at: DateTime<Utc>,
    grant: &Grant,
    customer: &str,
    outcome: Outcome,
    fields: &[&str],
) -> AccessRecord {
    let disclosed = matches!(outcome, Outcome::Ok);
    AccessRecord {
        at,
        request_id: uuid::Uuid::new_v4().to_string(),
        client_id: Some(grant.client_id.to_string()),
        grant_id: Some(grant.id.to_string()),
        customer_id: Some(customer.to_owned()),
        resource: "claims".into(),
        resource_id: None,
        record_ids: if disclosed {
            vec![format!("C-{}", &customer[3..])]
        } else {
            vec![]
        },
        fields: if disclosed {
            fields.iter().map(|f| (*f).to_owned()).collect()
        } else {
            vec![]
        },
        outcome,
        status: match outcome {
            Outcome::Ok => 200,
            Outcome::NotModified => 304,
            Outcome::Denied => 403,
            Outcome::NotFound => 404,
            Outcome::RateLimited => 429,
            Outcome::InvalidToken => 401,
            Outcome::UpstreamError => 502,
            Outcome::Unavailable => 503,
        },
        client_ip: Some("192.0.2.10".into()),
    }
}

/// Seeds the history unless the log holds records already; returns how many it wrote.
pub async fn seed(app: &App) -> anyhow::Result<usize> {
    if app.store.access_log_newest().await?.is_some() {
        return Ok(0);
    }
    let now = app.clock.now();
    let start = now - Duration::days(DAYS);
    let shop = ClientId::parse(super::DEMO_CLIENT_ID)?;
    let repairer = repairer(app).await?;
    let mut grants = Vec::new();
    for (upstream, _, _) in super::DEMO_CUSTOMERS {
        let Some(customer) = app
            .store
            .customer_by_upstream_id(&UpstreamCustomerId::parse(upstream)?)
            .await?
        else {
            continue;
        };
        for (client, scopes) in [
            (&shop, "claims:status claims:status_updated_at"),
            (&repairer, "claims:status claims:repair_stage"),
        ] {
            let grant = app
                .store
                .insert_grant(
                    customer.id,
                    client,
                    &FieldSet::parse(scopes)?,
                    start,
                    now + Duration::days(90),
                )
                .await?;
            grants.push((grant, upstream, scopes));
        }
    }
    let mut rng = Rng(0x5eed_cafe);
    let mut records = Vec::new();
    let hours = DAYS * 24;
    for h in 0..hours {
        let hour = start + Duration::hours(h);
        let office = (8..18).contains(&hour.hour());
        for (grant, customer, scopes) in &grants {
            let fields: Vec<&str> = scopes.split(' ').collect();
            let calls = if office {
                1 + rng.below(4)
            } else {
                rng.below(2)
            };
            for _ in 0..calls {
                let at = hour + Duration::seconds(rng.below(3600) as i64);
                let outcome = match rng.below(100) {
                    0..=74 => Outcome::Ok,
                    75..=92 => Outcome::NotModified,
                    93..=96 => Outcome::NotFound,
                    97..=98 => Outcome::RateLimited,
                    _ => Outcome::InvalidToken,
                };
                records.push(record(at, grant, customer, outcome, &fields));
            }
        }
    }
    // The last hour: the repairer asks for the IBAN again and again.
    if let Some((grant, customer, _)) = grants.iter().find(|(g, _, _)| g.client_id == repairer) {
        for i in 0..25 {
            let at = now - Duration::minutes(50) + Duration::minutes(i);
            records.push(record(at, grant, customer, Outcome::Denied, &[]));
        }
    }
    records.sort_by_key(|r| r.at);
    let count = records.len();
    for chunk in records.chunks(200) {
        let appends = chunk.iter().cloned().map(|r| app.access_log.append(r));
        for result in futures_util::future::join_all(appends).await {
            result?;
        }
    }
    // Durable in the journal now; in the database (and its running totals) once imported.
    app.access_log.settled().await;
    Ok(count)
}
