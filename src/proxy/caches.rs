//! In-process caches of facts that cannot change under a token: a verified token's claims
//! (until it expires), a grant's owner and fields, a partner's rate settings. Whatever *can*
//! change at once — revocation, suspension — is never cached here; it lives in shared state.
//! Along with each fact go the strings every call would otherwise build again: shared-state
//! keys and the partner's `RateLimit-Policy`.

use super::ratelimit::{PartnerLimits, PartnerRateLimiter};
use crate::app::App;
use crate::config::RateLimits;
use crate::domain::{ClientId, FieldSet, GrantId, UpstreamCustomerId};
use crate::error::Internal;
use crate::tokens::{AccessClaims, LEEWAY_SECONDS, TokenError};
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_ENTRIES: usize = 50_000;
/// Partner rate settings are re-read this often, so a change reaches every instance.
const PARTNER_RATES_TTL: Duration = Duration::from_secs(60);

/// A bounded map; when full it is emptied, which only costs re-verification.
struct Bounded<K, V> {
    map: RwLock<HashMap<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.read().get(key).cloned()
    }

    fn insert(&self, key: K, value: V) {
        let mut map = self.map.write();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, value);
    }
}

/// The immutable facts of a grant.
#[derive(Debug)]
pub struct GrantFacts {
    pub upstream_customer: UpstreamCustomerId,
    pub scopes: FieldSet,
    /// Its status and shared-limit keys in shared state.
    pub status_key: String,
    pub limit_key: String,
}

/// A partner's rate settings as the call path uses them, re-read every
/// `PARTNER_RATES_TTL`.
#[derive(Debug)]
pub struct PartnerProfile {
    pub limits: PartnerLimits,
    /// Its status and shared-limit keys in shared state.
    pub status_key: String,
    pub limit_key: String,
}

pub struct TokenCache {
    verified: Bounded<Box<str>, Arc<AccessClaims>>,
}

impl TokenCache {
    /// Partners poll with one token for its whole life: its signature is checked once.
    /// Only valid tokens are cached, so garbage cannot evict them.
    pub fn get_or_verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
        verify: impl FnOnce(&str) -> Result<AccessClaims, TokenError>,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            // The cache never outlives the token, with the verifier's own leeway.
            return if claims.exp + LEEWAY_SECONDS > now.timestamp() {
                Ok(claims)
            } else {
                Err(TokenError::Expired)
            };
        }
        let claims = Arc::new(verify(token)?);
        self.verified.insert(token.into(), claims.clone());
        Ok(claims)
    }
}

pub struct ProxyCaches {
    pub tokens: TokenCache,
    grants: Bounded<GrantId, Arc<GrantFacts>>,
    partners: Bounded<ClientId, (Instant, Arc<PartnerProfile>)>,
    pub limiter: PartnerRateLimiter,
}

impl ProxyCaches {
    pub fn new(defaults: RateLimits) -> Self {
        Self {
            tokens: TokenCache {
                verified: Bounded::new(),
            },
            grants: Bounded::new(),
            partners: Bounded::new(),
            limiter: PartnerRateLimiter::new(defaults),
        }
    }

    pub async fn grant_facts(&self, app: &App, id: GrantId) -> Result<Arc<GrantFacts>, Internal> {
        if let Some(facts) = self.grants.get(&id) {
            return Ok(facts);
        }
        let grant = app.store.grant(id).await?.ok_or_else(|| {
            Internal::Other(anyhow::anyhow!("grant {id} of a valid token is missing"))
        })?;
        let customer = app
            .store
            .customer(grant.customer_id)
            .await?
            .ok_or_else(|| Internal::Other(anyhow::anyhow!("customer of grant {id} is missing")))?;
        let facts = Arc::new(GrantFacts {
            upstream_customer: customer.upstream_id,
            scopes: grant.scopes,
            status_key: app.state.grant_status_key(id),
            limit_key: app.state.grant_limit_key(id),
        });
        self.grants.insert(id, facts.clone());
        Ok(facts)
    }

    pub async fn partner(
        &self,
        app: &App,
        client: &ClientId,
    ) -> Result<Arc<PartnerProfile>, Internal> {
        if let Some((at, profile)) = self.partners.get(client)
            && at.elapsed() < PARTNER_RATES_TTL
        {
            return Ok(profile);
        }
        let rates = app
            .store
            .partner(client)
            .await?
            .map(|p| p.rates)
            .unwrap_or_default();
        let profile = Arc::new(PartnerProfile {
            limits: self.limiter.limits(&rates),
            status_key: app.state.partner_status_key(client),
            limit_key: app.state.partner_limit_key(client),
        });
        self.partners
            .insert(client.clone(), (Instant::now(), profile.clone()));
        Ok(profile)
    }
}
