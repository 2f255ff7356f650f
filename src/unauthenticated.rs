//! The limit on calls without a valid token: per source address, shared by every instance
//! (through shared state), checked before such a call may write anything. A refused call is
//! counted in metrics, not logged row by row, so a flood can grow neither the access log nor
//! the admin audit trail.

use crate::config::RateLimits;
use crate::state::{RateOutcome, SharedState, StateError};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// What a call without a valid token may do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It may be answered (and recorded) as usual.
    Admitted,
    /// Over the limit: `429`, and nothing is written.
    Refused(Refused),
}

/// A refusal, with what the `429` tells the caller (`Retry-After`, `RateLimit-Policy`,
/// `RateLimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_seconds: u64,
    pub policy: String,
    pub current: String,
}

const POLICY_NAME: &str = "unauthenticated";

/// Spends one call of `source`'s allowance. Calls whose address is unknown share one.
pub async fn admit(
    state: &SharedState,
    limits: &RateLimits,
    source: Option<IpAddr>,
) -> Result<Admission, StateError> {
    let per_second = limits.unauthenticated_per_second.max(1e-6);
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let burst = limits.unauthenticated_burst.max(1);
    let source = source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match state.limit_unauthenticated(source, interval, burst).await? {
        RateOutcome::Allowed { .. } => Ok(Admission::Admitted),
        RateOutcome::Refused { retry_after, .. } => {
            // The headers are built only for a refusal: an admitted call pays for none.
            let window = (f64::from(burst) / per_second).ceil().max(1.0) as u64;
            let policy = format!("\"{POLICY_NAME}\";q={burst};w={window}");
            let retry = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            Ok(Admission::Refused(Refused {
                retry_after_seconds: retry,
                current: format!("\"{POLICY_NAME}\";r=0;t={retry}"),
                policy,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_address_has_its_own_burst() {
        let state = SharedState::in_memory();
        let limits = RateLimits {
            unauthenticated_per_second: 0.01,
            unauthenticated_burst: 2,
            ..RateLimits::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(
                admit(&state, &limits, Some(a)).await.unwrap(),
                Admission::Admitted
            );
        }
        assert!(matches!(
            admit(&state, &limits, Some(a)).await.unwrap(),
            Admission::Refused(r) if r.retry_after_seconds >= 99
        ));
        assert_eq!(
            admit(&state, &limits, Some(b)).await.unwrap(),
            Admission::Admitted
        );
    }

    #[tokio::test]
    async fn addresses_of_one_ipv6_subnet_share_an_allowance() {
        let state = SharedState::in_memory();
        let limits = RateLimits {
            unauthenticated_per_second: 0.01,
            unauthenticated_burst: 1,
            ..RateLimits::default()
        };
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let second: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(
            admit(&state, &limits, Some(first)).await.unwrap(),
            Admission::Admitted
        );
        assert!(matches!(
            admit(&state, &limits, Some(second)).await.unwrap(),
            Admission::Refused(_)
        ));
    }
}
