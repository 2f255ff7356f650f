//! The partner API's logic: every call is checked against its grant, reduced to the granted
//! fields, and described by exactly one access-log record.
//!
//! Order per call: token (verified once, then cached until it expires) → the gate: local
//! limiter, then grant, partner and token status with both shared limits in one shared-state
//! round trip (`gate.rs`) → resource, id and scope → upstream → owner → projection → ETag.
//! The HTTP handler then commits the record and only then answers.

mod caches;
mod etag;
pub mod gate;
pub mod projection;
pub mod ratelimit;

pub use caches::{GrantFacts, PartnerProfile, ProxyCaches};
pub use ratelimit::{PartnerLimits, PartnerRateLimiter, RateHeaders, Verdict};

use crate::access_log::{AccessRecord, Outcome};
use crate::app::App;
use crate::domain::{Field, Resource, bounded};
use crate::dpop::{self, DpopError};
use crate::error::Internal;
use crate::tokens::{AccessClaims, TokenError};
use crate::unauthenticated::{self, Admission};
use crate::upstream::{UpstreamClient, UpstreamError};
use projection::{Unprojected, project};
use std::sync::Arc;

/// Why a call got no data. Each maps to one status (in `error.rs`) and one log outcome.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    InvalidToken(String),
    /// RFC 9449 §7: a DPoP-bound token's proof is missing, wrong, replayed, or needs a nonce.
    #[error(transparent)]
    Dpop(#[from] DpopError),
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
            ProxyError::InvalidToken(_) | ProxyError::Dpop(_) => Outcome::InvalidToken,
            ProxyError::UnknownResource | ProxyError::NotFound => Outcome::NotFound,
            ProxyError::BadId | ProxyError::InsufficientScope => Outcome::Denied,
            ProxyError::RateLimited { .. } => Outcome::RateLimited,
            ProxyError::UpstreamTimeout | ProxyError::UpstreamFailed => Outcome::UpstreamError,
            // Shared state or the database is down: our failure, not the partner's.
            ProxyError::Unavailable(_) | ProxyError::LogUnavailable => Outcome::Unavailable,
        }
    }
}

/// How the access token was presented (RFC 6750 / RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// What the partner asked for, already taken apart by the HTTP layer.
pub struct CallRequest<'a> {
    pub token: Option<(&'a str, Scheme)>,
    /// The request's `DPoP` header; an error when it was sent more than once or unreadable.
    pub proof: Result<Option<&'a str>, DpopError>,
    /// The request path, for the proof's `htu`.
    pub path: &'a str,
    pub resource: &'a str,
    pub id: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub request_id: String,
    pub source: Option<std::net::IpAddr>,
}

/// A call's answer, the record that describes it, and what its metrics are labelled with.
pub struct Call<'app> {
    pub result: Result<Answer, ProxyError>,
    /// `None`: refused before it could write one (a flood of calls without a valid token).
    pub record: Option<AccessRecord>,
    pub labels: Labels<'app>,
}

/// Metric labels, from bounded sets only and found while the call ran, so the handler needs
/// neither a second catalog lookup nor copies of the record's strings.
#[derive(Default)]
pub struct Labels<'app> {
    /// The verified token's claims (its partner), if it had one.
    pub claims: Option<Arc<AccessClaims>>,
    /// The catalog's resource; `None` for a path segment the caller made up.
    pub resource: Option<&'app Resource>,
    /// The fields disclosed to the partner, in catalog order (empty unless it got data).
    pub disclosed: Vec<&'app Field>,
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
pub async fn handle<'app>(
    app: &'app App,
    upstream: &UpstreamClient,
    mut req: CallRequest<'_>,
) -> Call<'app> {
    let mut record = AccessRecord {
        at: app.clock.now(),
        request_id: std::mem::take(&mut req.request_id),
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
    let mut labels = Labels::default();
    let result = run(app, upstream, &req, &mut record, &mut labels).await;
    if matches!(
        result,
        Err(ProxyError::InvalidToken(_) | ProxyError::Dpop(_))
    ) {
        let limits = &app.settings.rate_limits;
        match unauthenticated::admit(&app.state, limits, req.source).await {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Refused(refused)) => {
                app.metrics.observe_unauthenticated_refusal("partner");
                let limited = ProxyError::RateLimited {
                    retry_after_seconds: refused.retry_after_seconds,
                    headers: RateHeaders {
                        policy: refused.policy.into(),
                        current: refused.current,
                    },
                };
                return Call {
                    result: Err(limited),
                    record: None,
                    labels,
                };
            }
            // Nothing was read, and without the limit nothing may be written.
            Err(e) => {
                return Call {
                    result: Err(ProxyError::Unavailable(e.into())),
                    record: None,
                    labels,
                };
            }
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
        labels.disclosed.clear();
    }
    Call {
        result,
        record: Some(record),
        labels,
    }
}

async fn run<'app>(
    app: &'app App,
    upstream: &UpstreamClient,
    req: &CallRequest<'_>,
    record: &mut AccessRecord,
    labels: &mut Labels<'app>,
) -> Result<Answer, ProxyError> {
    let now = app.clock.now();
    labels.resource = app.catalog.resource(req.resource);
    let (token, scheme) = req
        .token
        .ok_or_else(|| ProxyError::InvalidToken("an access token is required".into()))?;
    let claims = verified(app, token, now)?;
    labels.claims = Some(claims.clone());
    record.client_id = Some(claims.client_id.to_string());
    record.grant_id = Some(claims.grant_id.to_string());
    let proof_key = proven(app, req, token, scheme, &claims, now)?;
    let facts = app.proxy.grant_facts(app, claims.grant_id).await?;
    record.customer_id = Some(facts.upstream_customer.to_string());

    // Status and limits come before anything about the request itself, so a revoked grant
    // reads as revoked, and a partner cannot write unlimited log rows with bad requests.
    let partner = app.proxy.partner(app, &claims.client_id).await?;
    let proof = proof_key.as_deref().map(|key| (key, app.dpop.replay_ttl()));
    let rate = gate::pass(app, &claims, &facts, &partner, now, proof).await?;

    let resource = labels.resource.ok_or(ProxyError::UnknownResource)?;
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
    let mut disclosed = vec![false; fields.len()];
    let mut body = Vec::with_capacity(256);
    match req.id {
        Some(id) => {
            let path = resource.item_path.replace("{id}", id);
            let raw = upstream.get_body(&path).await.map_err(upstream_error)?;
            let upstream_record = projection::parse(&raw)
                .ok_or(UpstreamError::InvalidBody)
                .map_err(upstream_error)?;
            // Anything but an object is a broken upstream, not a missing record: a `404` here
            // would be logged as `not_found` and counted against the partner.
            let projected = project(
                resource,
                &fields,
                upstream_record,
                customer,
                &mut disclosed,
                &mut body,
            );
            let projected_id = match projected {
                Ok(projected_id) => projected_id,
                // Another customer's record looks exactly like a missing one.
                Err(Unprojected::NotOwned) => return Err(ProxyError::NotFound),
                Err(Unprojected::Broken) => return Err(ProxyError::UpstreamFailed),
            };
            if projected_id != id {
                return Err(ProxyError::UpstreamFailed);
            }
            record.record_ids = vec![projected_id];
        }
        None => {
            let path = resource.list_path.replace("{customer_id}", customer);
            let raw = upstream.get_body(&path).await.map_err(upstream_error)?;
            let list = projection::parse(&raw)
                .ok_or(UpstreamError::InvalidBody)
                .map_err(upstream_error)?;
            list_body(
                resource,
                &fields,
                customer,
                list,
                record,
                &mut disclosed,
                &mut body,
            )?;
        }
    }
    // Catalog order, like the fields themselves.
    labels.disclosed = fields
        .iter()
        .zip(&disclosed)
        .filter(|(_, d)| **d)
        .map(|(f, _)| *f)
        .collect();
    record.fields = labels
        .disclosed
        .iter()
        .map(|f| f.scope_name.clone())
        .collect();
    let etag = etag::of(&body);
    if req
        .if_none_match
        .is_some_and(|header| etag::matches(header, &etag))
    {
        return Ok(Answer::NotModified { etag, rate });
    }
    Ok(Answer::Data { body, etag, rate })
}

/// Writes `{"items":[…]}` with the owner's records, each reduced like an item answer.
fn list_body(
    resource: &Resource,
    fields: &[&Field],
    customer: &str,
    list: &serde_json::value::RawValue,
    record: &mut AccessRecord,
    disclosed: &mut [bool],
    out: &mut Vec<u8>,
) -> Result<(), ProxyError> {
    let items = projection::elements(list).ok_or(ProxyError::UpstreamFailed)?;
    out.extend_from_slice(b"{\"items\":[");
    let mut first = true;
    for item in items {
        if !projection::is_object(item) {
            return Err(ProxyError::UpstreamFailed);
        }
        let start = out.len();
        if !first {
            out.push(b',');
        }
        match project(resource, fields, item, customer, disclosed, out) {
            Ok(id) => {
                record.record_ids.push(id);
                first = false;
            }
            Err(Unprojected::NotOwned) => {
                // The upstream answered the wrong customer's record; never pass it on.
                out.truncate(start);
                tracing::warn!(resource = %resource.name, "upstream list held a record of another owner");
            }
            Err(Unprojected::Broken) => return Err(ProxyError::UpstreamFailed),
        }
    }
    out.extend_from_slice(b"]}");
    Ok(())
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

/// RFC 9449 §7: a bound token needs the `DPoP` scheme and a proof by its key for this very
/// request; an unbound one needs `Bearer`. Returns the shared-state key of the proof's `jti`,
/// which the gate spends in its one round trip.
fn proven(
    app: &App,
    req: &CallRequest<'_>,
    token: &str,
    scheme: Scheme,
    claims: &AccessClaims,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, ProxyError> {
    let cnf = match (&claims.cnf, scheme) {
        (None, Scheme::Bearer) => return Ok(None),
        (None, Scheme::Dpop) => {
            return Err(ProxyError::InvalidToken(
                "the token is not DPoP-bound: send it with the Bearer scheme".into(),
            ));
        }
        (Some(_), Scheme::Bearer) => {
            return Err(ProxyError::InvalidToken(
                "the token is DPoP-bound: send it with the DPoP scheme and a DPoP proof".into(),
            ));
        }
        (Some(cnf), Scheme::Dpop) => cnf,
    };
    let proof = req.proof.clone()?.ok_or(DpopError::Missing)?;
    let uri = app.dpop.resource_uri(req.path).ok_or(DpopError::WrongUri)?;
    let proof = app.dpop.check(proof, "GET", &uri, Some(token), now)?;
    if proof.jkt != cnf.jkt {
        return Err(DpopError::WrongKey.into());
    }
    Ok(Some(app.state.dpop_proof_key(&dpop::replay_id(&proof))))
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
