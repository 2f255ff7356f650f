//! The in-process backend: one mutex-guarded map with lazy expiry. Enough for one instance.

use super::{
    Fill, GateCheck, GateLimit, GateReply, RateCheck, RateOutcome, Since, StateBackend, StateError,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

type Entries = HashMap<String, (Vec<u8>, Instant)>;

pub struct MemoryBackend {
    entries: Mutex<Entries>,
    /// Rate-limit cells hold their theoretical arrival time as microseconds since this.
    epoch: Instant,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

/// Expired entries are dropped when the map passes a multiple of this size, so memory stays
/// bounded without a sweeper task.
const SWEEP_EVERY: usize = 4096;

impl MemoryBackend {
    fn live(entry: &(Vec<u8>, Instant), now: Instant) -> bool {
        entry.1 > now
    }

    fn insert(entries: &mut Entries, key: &str, value: Vec<u8>, expires: Instant, now: Instant) {
        if entries.len() % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.retain(|_, entry| Self::live(entry, now));
        }
        entries.insert(key.to_owned(), (value, expires));
    }

    fn count(value: &[u8]) -> Option<u64> {
        std::str::from_utf8(value).ok()?.parse().ok()
    }

    fn micros(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }
}

#[async_trait]
impl StateBackend for MemoryBackend {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StateError> {
        let now = Instant::now();
        Self::insert(&mut self.entries.lock(), key, value, now + ttl, now);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let entries = self.entries.lock();
        Ok(entries
            .get(key)
            .filter(|entry| Self::live(entry, now))
            .map(|entry| entry.0.clone()))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        _since: &Since,
    ) -> Result<Fill, StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.get(key).is_some_and(|entry| Self::live(entry, now)) {
            return Ok(Fill::Present);
        }
        Self::insert(&mut entries, key, value, now + ttl, now);
        Ok(Fill::Stored)
    }

    async fn since(&self) -> Result<Since, StateError> {
        Ok(Since::default())
    }

    async fn put_many(&self, entries: &[(String, Vec<u8>, Duration)]) -> Result<(), StateError> {
        let now = Instant::now();
        let mut map = self.entries.lock();
        for (key, value, ttl) in entries {
            Self::insert(&mut map, key, value.clone(), now + *ttl, now);
        }
        Ok(())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        Ok(self
            .entries
            .lock()
            .remove(key)
            .filter(|entry| Self::live(entry, now))
            .map(|entry| entry.0))
    }

    async fn expire_existing(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let now = Instant::now();
        match self.entries.lock().get_mut(key) {
            Some(entry) if Self::live(entry, now) => {
                entry.1 = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.entries.lock().remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }

    fn shares_limits(&self) -> bool {
        false
    }

    async fn incr(&self, keys: &[String], ttl: Duration) -> Result<Vec<u64>, StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let mut counts = Vec::with_capacity(keys.len());
        for key in keys {
            let count = entries
                .get(key)
                .filter(|entry| Self::live(entry, now))
                .and_then(|entry| Self::count(&entry.0))
                .unwrap_or(0)
                .saturating_add(1);
            // Decimal text, as Redis's INCR keeps it, so readers need not know the backend.
            Self::insert(
                &mut entries,
                key,
                count.to_string().into_bytes(),
                now + ttl,
                now,
            );
            counts.push(count);
        }
        Ok(counts)
    }

    async fn decr_existing(&self, keys: &[String]) -> Result<(), StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        for key in keys {
            if let Some(entry) = entries.get_mut(key).filter(|entry| Self::live(entry, now))
                && let Some(count) = Self::count(&entry.0)
            {
                entry.0 = count.saturating_sub(1).to_string().into_bytes();
            }
        }
        Ok(())
    }

    async fn rate_limit(&self, checks: &[RateCheck]) -> Result<RateOutcome, StateError> {
        let limits: Vec<GateLimit<'_>> = checks
            .iter()
            .map(|c| GateLimit {
                key: &c.key,
                interval: c.interval,
                burst: c.burst,
            })
            .collect();
        Ok(self.gcra(&mut self.entries.lock(), &limits, Instant::now()))
    }

    /// The gate under one lock: statuses read, then the limits spent only if they allow.
    async fn gate(&self, check: &GateCheck<'_>) -> Result<GateReply, StateError> {
        let instant = Instant::now();
        let mut entries = self.entries.lock();
        let read = |key: &str| {
            entries
                .get(key)
                .filter(|entry| Self::live(entry, instant))
                .map(|entry| entry.0.clone())
        };
        let grant = read(check.grant_key);
        let partner = read(check.partner_key);
        let jti_revoked = read(check.jti_key).is_some();
        if let Some((key, ttl)) = check.proof {
            if read(key).is_some() {
                return Ok(GateReply {
                    grant,
                    partner,
                    jti_revoked,
                    proof_replayed: true,
                    limits: None,
                });
            }
            Self::insert(&mut entries, key, b"1".to_vec(), instant + ttl, instant);
        }
        let limits = match &check.limits {
            Some(limits)
                if super::statuses_allow(
                    grant.as_deref(),
                    partner.as_deref(),
                    jti_revoked,
                    check.now,
                ) =>
            {
                Some(self.gcra(&mut entries, limits, instant))
            }
            _ => None,
        };
        Ok(GateReply {
            grant,
            partner,
            jti_revoked,
            proof_replayed: false,
            limits,
        })
    }
}

impl MemoryBackend {
    /// GCRA, as the Redis backend's script does it: every limit is checked before any is
    /// spent; each cell holds its theoretical arrival time (µs since `epoch`, big-endian).
    /// A cell is updated in place when it exists, so a steady caller allocates nothing.
    fn gcra(
        &self,
        entries: &mut Entries,
        limits: &[GateLimit<'_>],
        instant: Instant,
    ) -> RateOutcome {
        let now = Self::micros(instant.saturating_duration_since(self.epoch));
        let mut tats = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let interval = Self::micros(limit.interval).max(1);
            let burst = u64::from(limit.burst.max(1));
            let tat = entries
                .get(limit.key)
                .filter(|entry| Self::live(entry, instant))
                .and_then(|entry| <[u8; 8]>::try_from(entry.0.as_slice()).ok())
                .map_or(now, u64::from_be_bytes)
                .max(now);
            let allowed_until = now.saturating_add(interval.saturating_mul(burst - 1));
            if tat > allowed_until {
                return RateOutcome::Refused {
                    index,
                    retry_after: Duration::from_micros(tat - allowed_until),
                };
            }
            tats.push((tat, interval, burst));
        }
        let mut remaining = Vec::with_capacity(limits.len());
        for (limit, (tat, interval, burst)) in limits.iter().zip(tats) {
            let tat = tat.saturating_add(interval);
            let ahead = tat - now;
            let expires = instant + Duration::from_micros(ahead);
            match entries.get_mut(limit.key) {
                Some(entry) => {
                    entry.0.clear();
                    entry.0.extend_from_slice(&tat.to_be_bytes());
                    entry.1 = expires;
                }
                None => Self::insert(
                    entries,
                    limit.key,
                    tat.to_be_bytes().to_vec(),
                    expires,
                    instant,
                ),
            }
            let left = interval.saturating_mul(burst).saturating_sub(ahead) / interval;
            remaining.push(u32::try_from(left).unwrap_or(u32::MAX));
        }
        RateOutcome::Allowed { remaining }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gcra_allows_the_burst_then_refuses_with_a_retry_after() {
        let backend = MemoryBackend::default();
        let check = RateCheck {
            key: "rl".into(),
            interval: Duration::from_secs(10),
            burst: 3,
        };
        for left in [2, 1, 0] {
            assert_eq!(
                backend
                    .rate_limit(std::slice::from_ref(&check))
                    .await
                    .unwrap(),
                RateOutcome::Allowed {
                    remaining: vec![left]
                }
            );
        }
        match backend
            .rate_limit(std::slice::from_ref(&check))
            .await
            .unwrap()
        {
            RateOutcome::Refused { index, retry_after } => {
                assert_eq!(index, 0);
                assert!(retry_after > Duration::from_secs(9));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn counters_count_and_expire() {
        let backend = MemoryBackend::default();
        let minute = Duration::from_secs(60);
        let (c, d) = (vec!["c".to_owned()], vec!["d".to_owned()]);
        assert_eq!(backend.incr(&c, minute).await.unwrap(), vec![1]);
        let both = vec!["c".to_owned(), "e".to_owned()];
        assert_eq!(backend.incr(&both, minute).await.unwrap(), vec![2, 1]);
        backend.decr_existing(&both).await.unwrap();
        assert_eq!(backend.incr(&both, minute).await.unwrap(), vec![2, 1]);
        assert_eq!(backend.incr(&d, Duration::ZERO).await.unwrap(), vec![1]);
        assert_eq!(backend.incr(&d, Duration::ZERO).await.unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn expired_entries_are_invisible() {
        let backend = MemoryBackend::default();
        backend
            .put("k", b"v".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(backend.get("k").await.unwrap(), None);
        assert!(
            !backend
                .expire_existing("k", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }
}
