//! The partner API's logic: every call is checked against its grant, reduced to the granted
//! fields, and described by exactly one access-log record.
//!
//! Order per call: token (verified once, then cached until it expires) → grant, partner and
//! token status in shared state (one round trip) → rate limits → resource, id and scope →
//! upstream → owner → projection → ETag. The HTTP handler then commits the record and only then answers.

mod caches;
mod etag;
pub mod projection;
pub mod ratelimit;

pub use caches::{GrantFacts, ProxyCaches};
pub use ratelimit::{PartnerRateLimiter, RateHeaders, Verdict};

use crate::access_log::{AccessRecord, Outcome};
use crate::app::App;
use crate::domain::{Field, Resource, bounded};
use crate::error::Internal;
use crate::state::PartnerState;
use crate::tokens::{AccessClaims, TokenError};
use crate::unauthenticated::{self, Admission};
use crate::upstream::{UpstreamClient, UpstreamError};
use projection::{is_owned_by, project};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Why a call got no data. Each maps to one status (in `error.rs`) and one log outcome.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    InvalidToken(String),
    #[error("no such resource")]
    UnknownResource,
    #[error("the record id is not valid")]
    BadId,
    #[error("the token grants no field of this resource")]
    InsufficientScope,
    #[error("rate limit exceeded; retry after {retry_after_seconds} s")]
    RateLimited {
        retry_after_seconds: u64,
        headers: RateHeaders,
    },
    #[error("the requested record does not exist")]
    NotFound,
    #[error("the claims service did not answer in time")]
    UpstreamTimeout,
    #[error("the claims service failed")]
    UpstreamFailed,
    #[error(transparent)]
    Unavailable(#[from] Internal),
    #[error("the access log cannot be written")]
    LogUnavailable,
}

impl ProxyError {
    pub fn outcome(&self) -> Outcome {
        match self {
            ProxyError::InvalidToken(_) => Outcome::InvalidToken,
            ProxyError::UnknownResource | ProxyError::NotFound => Outcome::NotFound,
            ProxyError::BadId | ProxyError::InsufficientScope => Outcome::Denied,
            ProxyError::RateLimited { .. } => Outcome::RateLimited,
            ProxyError::UpstreamTimeout | ProxyError::UpstreamFailed => Outcome::UpstreamError,
            // Shared state or the database is down: our failure, not the partner's.
            ProxyError::Unavailable(_) | ProxyError::LogUnavailable => Outcome::Unavailable,
        }
    }
}

/// What the partner asked for, already taken apart by the HTTP layer.
pub struct CallRequest<'a> {
    pub bearer: Option<&'a str>,
    pub resource: &'a str,
    pub id: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub request_id: String,
    pub source: Option<std::net::IpAddr>,
}

#[derive(Debug)]
pub enum Answer {
    Data {
        body: Vec<u8>,
        etag: String,
        rate: RateHeaders,
    },
    NotModified {
        etag: String,
        rate: RateHeaders,
    },
}

/// Ids go into upstream paths: letters, digits, `_` and `-` only, at most 64.
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs the call and returns its answer together with the record that describes it. A call
/// without a valid token first spends its source address's allowance; over it, the call gets
/// `429` and no record (`None`), so a flood cannot grow the log.
pub async fn handle(
    app: &App,
    upstream: &UpstreamClient,
    req: CallRequest<'_>,
) -> (Result<Answer, ProxyError>, Option<AccessRecord>) {
    let mut record = AccessRecord {
        at: app.clock.now(),
        request_id: req.request_id.clone(),
        client_id: None,
        grant_id: None,
        customer_id: None,
        resource: bounded(req.resource),
        resource_id: req.id.map(bounded),
        record_ids: Vec::new(),
        fields: Vec::new(),
        outcome: Outcome::Denied,
        status: 0,
        client_ip: req.source.map(|ip| ip.to_string()),
    };
    let result = run(app, upstream, &req, &mut record).await;
    if matches!(result, Err(ProxyError::InvalidToken(_))) {
        let limits = &app.settings.rate_limits;
        match unauthenticated::admit(&app.state, limits, req.source).await {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Refused(refused)) => {
                app.metrics.observe_unauthenticated_refusal("partner");
                let limited = ProxyError::RateLimited {
                    retry_after_seconds: refused.retry_after_seconds,
                    headers: RateHeaders {
                        policy: refused.policy,
                        current: refused.current,
                    },
                };
                return (Err(limited), None);
            }
            // Nothing was read, and without the limit nothing may be written.
            Err(e) => return (Err(ProxyError::Unavailable(e.into())), None),
        }
    }
    record.outcome = match &result {
        Ok(Answer::Data { .. }) => Outcome::Ok,
        Ok(Answer::NotModified { .. }) => Outcome::NotModified,
        Err(e) => e.outcome(),
    };
    if result.is_err() {
        record.record_ids.clear();
        record.fields.clear();
    }
    (result, Some(record))
}

async fn run(
    app: &App,
    upstream: &UpstreamClient,
    req: &CallRequest<'_>,
    record: &mut AccessRecord,
) -> Result<Answer, ProxyError> {
    let now = app.clock.now();
    let token = req
        .bearer
        .ok_or_else(|| ProxyError::InvalidToken("an access token is required".into()))?;
    let claims = verified(app, token, now)?;
    record.client_id = Some(claims.client_id.to_string());
    record.grant_id = Some(claims.grant_id.to_string());
    let facts = app.proxy.grant_facts(app, claims.grant_id).await?;
    record.customer_id = Some(facts.upstream_customer.to_string());

    // Status and limits come before anything about the request itself, so a revoked grant
    // always reads as revoked, and a partner cannot write unlimited log rows with bad requests.
    check_status(app, &claims, now).await?;
    let rates = app.proxy.partner_rates(app, &claims.client_id).await?;
    // The local limiter first: when it refuses, shared state is not asked. Then the limits
    // shared by every instance, when the backend has them (Redis).
    let local = app
        .proxy
        .limiter
        .check(&claims.client_id, claims.grant_id, &rates);
    let verdict = match local {
        Verdict::Allowed(headers) => {
            let (partner, grant) = app.proxy.limiter.policies(&rates);
            match app
                .state
                .rate_limit(
                    claims.grant_id,
                    &claims.client_id,
                    (grant.interval(), grant.burst),
                    (partner.interval(), partner.burst),
                )
                .await
                .map_err(Internal::from)?
            {
                Some(shared) => ratelimit::shared_verdict(&shared, partner, grant, headers.policy),
                None => Verdict::Allowed(headers),
            }
        }
        refused => refused,
    };
    let rate = match verdict {
        Verdict::Allowed(headers) => headers,
        Verdict::Refused {
            retry_after_seconds,
            headers,
        } => {
            return Err(ProxyError::RateLimited {
                retry_after_seconds,
                headers,
            });
        }
    };

    let resource = app
        .catalog
        .resource(req.resource)
        .ok_or(ProxyError::UnknownResource)?;
    if req.id.is_some_and(|id| !valid_record_id(id)) {
        return Err(ProxyError::BadId);
    }
    let fields: Vec<&Field> = resource
        .fields
        .values()
        .filter(|f| claims.scope.contains(&f.scope) && facts.scopes.contains(&f.scope))
        .collect();
    if fields.is_empty() {
        return Err(ProxyError::InsufficientScope);
    }

    let customer = facts.upstream_customer.as_str();
    let body = match req.id {
        Some(id) => {
            let path = resource.item_path.replace("{id}", id);
            let upstream_record = upstream.get_json(&path).await.map_err(upstream_error)?;
            // Anything but an object is a broken upstream, not a missing record: a `404` here
            // would be logged as `not_found` and counted against the partner.
            if !upstream_record.is_object() {
                return Err(ProxyError::UpstreamFailed);
            }
            // Another customer's record looks exactly like a missing one.
            if !is_owned_by(resource, &upstream_record, customer) {
                return Err(ProxyError::NotFound);
            }
            let projected =
                project(resource, &fields, &upstream_record).ok_or(ProxyError::UpstreamFailed)?;
            if projected.id != id {
                return Err(ProxyError::UpstreamFailed);
            }
            record.record_ids = vec![projected.id];
            record.fields = projected.disclosed;
            Value::Object(projected.body)
        }
        None => {
            let path = resource.list_path.replace("{customer_id}", customer);
            let list = upstream.get_json(&path).await.map_err(upstream_error)?;
            list_body(resource, &fields, customer, list, record)?
        }
    };
    let body = serde_json::to_vec(&body).map_err(|e| Internal::Other(e.into()))?;
    let etag = etag::of(&body);
    if req
        .if_none_match
        .is_some_and(|header| etag::matches(header, &etag))
    {
        return Ok(Answer::NotModified { etag, rate });
    }
    Ok(Answer::Data { body, etag, rate })
}

fn list_body(
    resource: &Resource,
    fields: &[&Field],
    customer: &str,
    list: Value,
    record: &mut AccessRecord,
) -> Result<Value, ProxyError> {
    let Value::Array(items) = list else {
        return Err(ProxyError::UpstreamFailed);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut disclosed = std::collections::BTreeSet::new();
    for item in &items {
        if !item.is_object() {
            return Err(ProxyError::UpstreamFailed);
        }
        if !is_owned_by(resource, item, customer) {
            // The upstream answered the wrong customer's record; never pass it on.
            tracing::warn!(resource = %resource.name, "upstream list held a record of another owner");
            continue;
        }
        let projected = project(resource, fields, item).ok_or(ProxyError::UpstreamFailed)?;
        record.record_ids.push(projected.id);
        disclosed.extend(projected.disclosed);
        out.push(Value::Object(projected.body));
    }
    // Catalog order, like item answers.
    record.fields = fields
        .iter()
        .map(|f| f.scope.to_string())
        .filter(|s| disclosed.contains(s))
        .collect();
    let mut body = Map::with_capacity(1);
    body.insert("items".into(), Value::Array(out));
    Ok(Value::Object(body))
}

fn upstream_error(e: UpstreamError) -> ProxyError {
    match e {
        UpstreamError::NotFound => ProxyError::NotFound,
        UpstreamError::Timeout => ProxyError::UpstreamTimeout,
        other => {
            tracing::warn!(error = %other, "upstream call failed");
            ProxyError::UpstreamFailed
        }
    }
}

fn verified(
    app: &App,
    token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Arc<AccessClaims>, ProxyError> {
    app.proxy
        .tokens
        .get_or_verify(token, now, |t| app.verifier.verify(t, now))
        .map_err(|e: TokenError| ProxyError::InvalidToken(e.to_string()))
}

/// Grant active and unexpired, partner not suspended, token not revoked: one round trip to
/// shared state; what it does not know, the database answers (and is then cached).
async fn check_status(
    app: &App,
    claims: &AccessClaims,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProxyError> {
    let status = app
        .state
        .call_status(claims.grant_id, &claims.client_id, &claims.jti)
        .await
        .map_err(Internal::from)?;
    if status.jti_revoked {
        return Err(ProxyError::InvalidToken(
            "the token has been revoked".into(),
        ));
    }
    let grant_active = match status.grant {
        Some(grant) => grant.is_active_at(now),
        None => crate::oauth::grants::is_active(app, claims.grant_id).await?,
    };
    if !grant_active {
        return Err(ProxyError::InvalidToken(
            "the customer's consent has ended".into(),
        ));
    }
    let partner = match status.partner {
        Some(state) => state,
        None => crate::oauth::grants::partner_state(app, &claims.client_id).await?,
    };
    if partner != PartnerState::Active {
        return Err(ProxyError::InvalidToken("the partner is suspended".into()));
    }
    Ok(())
}
