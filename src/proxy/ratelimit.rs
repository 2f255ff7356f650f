//! Rate limits per partner and per grant (GCRA, via governor), with the partner's own
//! `--rate/--burst` overriding the `[rate_limits]` defaults.

use crate::config::RateLimits;
use crate::domain::{ClientId, GrantId};
use crate::store::PartnerRates;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The limits' limit: forgotten limiters (ended grants) are dropped past this many.
const MAX_LIMITERS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub per_second: f64,
    pub burst: u32,
}

impl Policy {
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / self.per_second.max(1e-6));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }

    /// One call's share of the rate: GCRA's emission interval.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second.max(1e-6))
    }

    /// The window in which the whole burst refills, for `RateLimit-Policy`'s `w`.
    fn window_seconds(self) -> u64 {
        (f64::from(self.burst) / self.per_second).ceil().max(1.0) as u64
    }
}

/// The headers of draft-ietf-httpapi-ratelimit-headers, computed from both limits.
/// `policy` is a partner's constant, made once ([`PartnerLimits`]) and shared by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    pub policy: bytes::Bytes,
    pub current: String,
}

/// A partner's two policies and its `RateLimit-Policy` header, made once per partner (and
/// re-made when its settings are re-read), not once per call.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerLimits {
    pub partner: Policy,
    pub grant: Policy,
    pub policy: bytes::Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(RateHeaders),
    Refused {
        retry_after_seconds: u64,
        headers: RateHeaders,
    },
}

struct Limiters<K> {
    map: RwLock<HashMap<K, (Policy, Arc<Limiter>)>>,
}

impl<K: Hash + Eq + Clone> Limiters<K> {
    fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, policy: Policy) -> Arc<Limiter> {
        if let Some((p, limiter)) = self.map.read().get(key)
            && *p == policy
        {
            return limiter.clone();
        }
        let mut map = self.map.write();
        if map.len() >= MAX_LIMITERS {
            map.clear();
        }
        let limiter = Arc::new(RateLimiter::direct(policy.quota()).with_middleware());
        map.insert(key.clone(), (policy, limiter.clone()));
        limiter
    }
}

pub struct PartnerRateLimiter {
    defaults: RateLimits,
    partners: Limiters<ClientId>,
    grants: Limiters<GrantId>,
    clock: DefaultClock,
}

impl PartnerRateLimiter {
    pub fn new(defaults: RateLimits) -> Self {
        Self {
            defaults,
            partners: Limiters::new(),
            grants: Limiters::new(),
            clock: DefaultClock::default(),
        }
    }

    /// The partner's and the grant's policy, defaults overridden by the partner's own, with
    /// the header that announces them.
    pub fn limits(&self, rates: &PartnerRates) -> PartnerLimits {
        let partner = Policy {
            per_second: rates.per_second.unwrap_or(self.defaults.partner_per_second),
            burst: rates.burst.unwrap_or(self.defaults.partner_burst),
        };
        let grant = Policy {
            per_second: rates
                .grant_per_second
                .unwrap_or(self.defaults.grant_per_second),
            burst: rates.grant_burst.unwrap_or(self.defaults.grant_burst),
        };
        PartnerLimits {
            partner,
            grant,
            policy: policy_header(partner, grant).into(),
        }
    }

    /// Checks the grant's limit, then the partner's: a call refused by its grant does not
    /// spend the partner's budget.
    pub fn check(&self, client: &ClientId, grant: GrantId, limits: &PartnerLimits) -> Verdict {
        let (partner_policy, grant_policy) = (limits.partner, limits.grant);
        let policy = limits.policy.clone();
        let checks = [
            ("grant", grant_policy, self.grants.get(&grant, grant_policy)),
            (
                "partner",
                partner_policy,
                self.partners.get(client, partner_policy),
            ),
        ];
        let mut tightest: Option<(&str, u32, u64)> = None;
        for (name, p, limiter) in checks {
            match limiter.check() {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    let reset =
                        (f64::from(p.burst - remaining.min(p.burst)) / p.per_second).ceil() as u64;
                    if tightest.is_none_or(|(_, r, _)| remaining < r) {
                        tightest = Some((name, remaining, reset));
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return Verdict::Refused {
                        retry_after_seconds: retry.max(1),
                        headers: RateHeaders {
                            policy,
                            current: format!("\"{name}\";r=0;t={}", retry.max(1)),
                        },
                    };
                }
            }
        }
        let (name, remaining, reset) = tightest.unwrap_or(("grant", 0, 0));
        Verdict::Allowed(RateHeaders {
            policy,
            current: format!("\"{name}\";r={remaining};t={reset}"),
        })
    }
}

/// `RateLimit-Policy` for both limits.
pub fn policy_header(partner: Policy, grant: Policy) -> String {
    format!(
        "\"partner\";q={};w={}, \"grant\";q={};w={}",
        partner.burst,
        partner.window_seconds(),
        grant.burst,
        grant.window_seconds()
    )
}

/// The verdict of the limits shared by every instance (grant first, then partner).
pub fn shared_verdict(outcome: &crate::state::RateOutcome, limits: &PartnerLimits) -> Verdict {
    use crate::state::RateOutcome;
    let (partner, grant, policy) = (limits.partner, limits.grant, limits.policy.clone());
    let named = [("grant", grant), ("partner", partner)];
    match outcome {
        RateOutcome::Refused { index, retry_after } => {
            let name = named.get(*index).map_or("grant", |n| n.0);
            let retry = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            Verdict::Refused {
                retry_after_seconds: retry,
                headers: RateHeaders {
                    policy,
                    current: format!("\"{name}\";r=0;t={retry}"),
                },
            }
        }
        RateOutcome::Allowed { remaining } => {
            let (name, p, left) = named
                .iter()
                .zip(remaining)
                .map(|((name, p), left)| (*name, *p, *left))
                .min_by_key(|(_, _, left)| *left)
                .unwrap_or(("grant", grant, grant.burst));
            let reset = (f64::from(p.burst - left.min(p.burst)) / p.per_second).ceil() as u64;
            Verdict::Allowed(RateHeaders {
                policy,
                current: format!("\"{name}\";r={left};t={reset}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> PartnerRateLimiter {
        PartnerRateLimiter::new(RateLimits {
            partner_per_second: 1000.0,
            partner_burst: 1000,
            grant_per_second: 0.01,
            grant_burst: 2,
            ..RateLimits::default()
        })
    }

    #[test]
    fn the_grant_burst_is_enforced_with_a_retry_after() {
        let limits = limiter();
        let client = ClientId::parse("p").unwrap();
        let grant = GrantId::random();
        let rates = limits.limits(&PartnerRates::default());
        assert!(matches!(
            limits.check(&client, grant, &rates),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            limits.check(&client, grant, &rates),
            Verdict::Allowed(_)
        ));
        match limits.check(&client, grant, &rates) {
            Verdict::Refused {
                retry_after_seconds,
                headers,
            } => {
                assert!(retry_after_seconds >= 90, "{retry_after_seconds}");
                let policy = String::from_utf8_lossy(&headers.policy);
                assert!(policy.contains("\"grant\";q=2;w=200"), "{policy}");
                assert!(headers.current.starts_with("\"grant\";r=0"));
            }
            other => panic!("{other:?}"),
        }
        // Another grant of the same partner has its own budget.
        assert!(matches!(
            limits.check(&client, GrantId::random(), &rates),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn a_partners_own_rates_override_the_defaults() {
        let limits = limiter();
        let client = ClientId::parse("p").unwrap();
        let rates = limits.limits(&PartnerRates {
            per_second: Some(0.01),
            burst: Some(1),
            grant_per_second: Some(1000.0),
            grant_burst: Some(1000),
        });
        assert!(matches!(
            limits.check(&client, GrantId::random(), &rates),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            limits.check(&client, GrantId::random(), &rates),
            Verdict::Refused { .. }
        ));
    }
}
