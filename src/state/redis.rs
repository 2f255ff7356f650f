//! The Redis backend: the same contract as the in-process one, shared by every instance.
//!
//! A few multiplexed connections, used in turn: each pipelines any number of concurrent
//! commands over one socket. The connections are kept here rather than by a reconnecting
//! manager because of one rule: a new connection carries nothing before the epoch check
//! (`epoch.rs`) has run on it, so a Redis that came back with old data is noticed before
//! anything is read from it. A dead connection is dropped on its first failure, and the next
//! call opens a new one. Every command has a response timeout: a Redis that hangs is a Redis
//! that is down, and callers fail closed on [`StateError::Unavailable`].

use super::epoch::{
    ENSURE_LUA, EXPIRE_EXISTING_LUA, GET_LUA, NO_EPOCH, PUT_IF_ABSENT_LUA, PUT_LUA, PUT_MANY_LUA,
    STAMP_LUA, TAKE_LUA,
};
use super::gate::{GATE_LUA, GCRA_LUA};
use super::{Fill, GateCheck, GateReply, RateCheck, RateOutcome, Since, StateBackend, StateError};
use async_trait::async_trait;
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, ScriptInvocation};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Multiplexed connections per instance; each carries many commands at once.
const CONNECTIONS: usize = 4;
const TIMEOUT: Duration = Duration::from_millis(500);

/// After a failed connection attempt, calls fail at once for this long instead of each
/// waiting for its own attempt: an outage costs every caller an error, not a queue.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Takes one off a counter that exists and is above zero; an expired counter stays gone
/// (a plain DECR would bring it back without a time to live).
const DECR_EXISTING: &str = r"#!lua
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
";

#[derive(Default)]
struct Slot {
    live: RwLock<Option<MultiplexedConnection>>,
    /// One connection attempt per slot at a time.
    connecting: tokio::sync::Mutex<()>,
    failed_at: RwLock<Option<Instant>>,
}

pub struct RedisBackend {
    client: redis::Client,
    slots: Vec<Slot>,
    next: AtomicUsize,
    epoch_key: String,
    ensure: redis::Script,
    put: redis::Script,
    get: redis::Script,
    put_if_absent: redis::Script,
    put_many: redis::Script,
    stamp: redis::Script,
    take: redis::Script,
    expire_existing: redis::Script,
    decr_existing: redis::Script,
    gcra: redis::Script,
    gate: redis::Script,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(format!("redis: {e}"))
}

/// GCRA intervals in whole microseconds, at least one.
fn micros(interval: Duration) -> u64 {
    u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn malformed() -> StateError {
    StateError::Unavailable("redis: unexpected script reply".into())
}

fn number(v: &redis::Value) -> Result<i64, StateError> {
    redis::from_redis_value_ref::<i64>(v).map_err(|e| unavailable(e.into()))
}

/// A GCRA reply: {1, remaining…} or {0, index, retry_after_µs}.
fn rate_outcome(reply: &[redis::Value]) -> Result<RateOutcome, StateError> {
    match reply.split_first() {
        Some((flag, rest)) if number(flag)? == 1 => Ok(RateOutcome::Allowed {
            remaining: rest
                .iter()
                .map(|v| number(v).map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)))
                .collect::<Result<_, _>>()?,
        }),
        Some((_, [index, retry])) => Ok(RateOutcome::Refused {
            index: usize::try_from(number(index)?).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(number(retry)?).unwrap_or(0)),
        }),
        _ => Err(malformed()),
    }
}

/// Redis wants whole milliseconds, at least one.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    /// Connects (failing when Redis cannot be reached now); later outages are survived.
    /// `prefix` is the deployment's key prefix: the epoch key lives under it.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StateError> {
        let backend = Self {
            client: redis::Client::open(url).map_err(unavailable)?,
            slots: (0..CONNECTIONS).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            epoch_key: format!("{prefix}epoch"),
            ensure: redis::Script::new(ENSURE_LUA),
            put: redis::Script::new(PUT_LUA),
            get: redis::Script::new(GET_LUA),
            put_if_absent: redis::Script::new(PUT_IF_ABSENT_LUA),
            put_many: redis::Script::new(PUT_MANY_LUA),
            stamp: redis::Script::new(STAMP_LUA),
            take: redis::Script::new(TAKE_LUA),
            expire_existing: redis::Script::new(EXPIRE_EXISTING_LUA),
            decr_existing: redis::Script::new(DECR_EXISTING),
            gcra: redis::Script::new(GCRA_LUA),
            gate: redis::Script::new(GATE_LUA),
        };
        // Every slot connects now, so a wrong URL stops the start; and the hot scripts are
        // loaded once, so every call is an EVALSHA from the first (after a Redis restart an
        // invocation reloads its script by itself: NOSCRIPT, then SCRIPT LOAD).
        for slot in &backend.slots {
            let conn = backend.open().await?;
            *slot.live.write() = Some(conn);
        }
        let mut conn = backend.connection().await?;
        for script in [&backend.gcra, &backend.gate, &backend.get, &backend.put] {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        warn_unless_noeviction(&mut conn).await;
        Ok(backend)
    }

    /// A new connection, checked against the epoch before anything else goes over it.
    async fn open(&self) -> Result<MultiplexedConnection, StateError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        self.ensure_epoch(&mut conn).await.map_err(unavailable)?;
        Ok(conn)
    }

    /// Gives this Redis process an epoch of its own unless it has one (see `epoch.rs`).
    async fn ensure_epoch(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let seed = crate::secrets::random_bytes::<8>().map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "randomness", e.to_string()))
        })?;
        let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let (epoch, new): (String, i64) = self
            .ensure
            .key(&self.epoch_key)
            .arg(seed)
            .invoke_async(conn)
            .await?;
        if new == 1 {
            tracing::warn!(
                epoch = %epoch,
                "Redis holds no epoch of its own (first start, FLUSHALL, a restart or a \
                 failover): began a new one; statuses, sessions and codes written before are \
                 ignored, and the database answers"
            );
        }
        Ok(())
    }

    /// A live connection from the next slot, opening one when the slot has none.
    async fn connection(&self) -> Result<MultiplexedConnection, StateError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(conn) = slot.live.read().clone() {
            return Ok(conn);
        }
        let _one = slot.connecting.lock().await;
        if let Some(conn) = slot.live.read().clone() {
            return Ok(conn);
        }
        if slot
            .failed_at
            .read()
            .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
        {
            return Err(StateError::Unavailable("redis: reconnecting".into()));
        }
        match self.open().await {
            Ok(conn) => {
                *slot.live.write() = Some(conn.clone());
                *slot.failed_at.write() = None;
                Ok(conn)
            }
            Err(e) => {
                *slot.failed_at.write() = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Whether an error means the connection must not be used again: broken, timed out, or
    /// reaching a server that is not (or not yet) a primary with its data — a demoted primary
    /// (`READONLY`), one whose primary is down (`MASTERDOWN`), one loading (`LOADING`). Its
    /// successor's epoch check runs once the server is a primary again.
    fn is_dead(e: &redis::RedisError) -> bool {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
    }

    /// Drops every slot's connection: when one died with its server, the others did too, and
    /// each would otherwise cost a failed call to find out.
    fn drop_all(&self) {
        for slot in &self.slots {
            *slot.live.write() = None;
        }
    }

    /// Runs `attempt` on a live connection. When the connection turns out dead, every slot is
    /// dropped and the call is tried once more on a new (epoch-checked) connection: after a
    /// Redis restart the first call then succeeds instead of failing. A timeout is not retried
    /// (the server may be hanging, and the caller has waited long enough).
    async fn run<T, F, Fut>(&self, attempt: F) -> Result<T, StateError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            match attempt(self.connection().await?).await {
                Ok(value) => return Ok(value),
                Err(e) if Self::is_dead(&e) => {
                    self.drop_all();
                    if retried || e.is_timeout() {
                        return Err(unavailable(e));
                    }
                    retried = true;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StateError> {
        self.run(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StateError> {
        self.run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Runs a script; a write that found no epoch (a `FLUSHALL`) makes one and runs again.
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        self.run(|mut conn| async move {
            let result = invocation.invoke_async(&mut conn).await;
            match result {
                Err(e) if e.code() == Some(NO_EPOCH) => {
                    self.ensure_epoch(&mut conn).await?;
                    invocation.invoke_async(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// A stamped script over one key: the epoch key, then `key`.
    fn stamped<'a>(&'a self, script: &'a redis::Script, key: &str) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.epoch_key).key(key);
        invocation
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StateError> {
        let mut invocation = self.stamped(&self.put, key);
        invocation.arg(value).arg(millis(ttl));
        self.invoke::<i64>(&invocation).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.invoke(&self.stamped(&self.get, key)).await
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        since: &Since,
    ) -> Result<Fill, StateError> {
        let mut invocation = self.stamped(&self.put_if_absent, key);
        invocation
            .arg(value)
            .arg(millis(ttl))
            .arg(since.0.as_deref().unwrap_or(""));
        Ok(match self.invoke::<i64>(&invocation).await? {
            1 => Fill::Stored,
            0 => Fill::Present,
            _ => Fill::EpochChanged,
        })
    }

    async fn since(&self) -> Result<Since, StateError> {
        let mut invocation = self.stamp.prepare_invoke();
        invocation.key(&self.epoch_key);
        // No epoch yet (a FLUSHALL): the fill's own write makes one, and any stamp differs
        // from this, so the fill is refused rather than trusted.
        let stamp: Option<String> = self.invoke(&invocation).await?;
        Ok(Since(Some(stamp.unwrap_or_else(|| "none".into()))))
    }

    async fn put_many(&self, entries: &[(String, Vec<u8>, Duration)]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.put_many.prepare_invoke();
        invocation.key(&self.epoch_key);
        for (key, value, ttl) in entries {
            invocation.key(key).arg(value.as_slice()).arg(millis(*ttl));
        }
        self.invoke::<i64>(&invocation).await.map(|_| ())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.invoke(&self.stamped(&self.take, key)).await
    }

    async fn expire_existing(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut invocation = self.stamped(&self.expire_existing, key);
        invocation.arg(millis(ttl));
        Ok(self.invoke::<i64>(&invocation).await? == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    fn shares_limits(&self) -> bool {
        true
    }

    async fn incr(&self, keys: &[String], ttl: Duration) -> Result<Vec<u64>, StateError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.cmd("INCR")
                .arg(key)
                .cmd("PEXPIRE")
                .arg(key)
                .arg(millis(ttl))
                .ignore();
        }
        self.query_pipe(&pipe).await
    }

    async fn decr_existing(&self, keys: &[String]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.decr_existing.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        self.invoke::<i64>(&invocation).await.map(|_| ())
    }

    async fn rate_limit(&self, checks: &[RateCheck]) -> Result<RateOutcome, StateError> {
        let mut invocation = self.gcra.prepare_invoke();
        for check in checks {
            invocation
                .key(&check.key)
                .arg(micros(check.interval))
                .arg(check.burst.max(1));
        }
        let reply: Vec<redis::Value> = self.invoke(&invocation).await?;
        rate_outcome(&reply)
    }

    async fn gate(&self, check: &GateCheck<'_>) -> Result<GateReply, StateError> {
        let mut invocation = self.gate.prepare_invoke();
        invocation
            .key(&self.epoch_key)
            .key(check.grant_key)
            .key(check.partner_key)
            .key(check.jti_key)
            .key(check.proof.map_or(check.jti_key, |(key, _)| key))
            .arg(check.now.timestamp())
            .arg(check.now.timestamp_subsec_nanos())
            .arg(check.proof.map_or(0, |(_, ttl)| ttl.as_millis().max(1)));
        for limit in check.limits.iter().flatten() {
            invocation
                .key(limit.key)
                .arg(micros(limit.interval))
                .arg(limit.burst.max(1));
        }
        let reply: Vec<redis::Value> = self.invoke(&invocation).await?;
        let bytes = |v: Option<redis::Value>| match v {
            Some(v) => {
                redis::from_redis_value::<Option<Vec<u8>>>(v).map_err(|e| unavailable(e.into()))
            }
            None => Err(malformed()),
        };
        let mut values = reply.into_iter();
        let grant = bytes(values.next())?;
        let partner = bytes(values.next())?;
        let rest: Vec<redis::Value> = values.collect();
        let (jti, verdict) = rest.split_first().ok_or_else(malformed)?;
        let (proof_replayed, limits) = match verdict {
            [flag] if number(flag)? == -1 => (false, None),
            [flag] if number(flag)? == -2 => (true, None),
            verdict => (false, Some(rate_outcome(verdict)?)),
        };
        Ok(GateReply {
            grant,
            partner,
            jti_revoked: number(jti)? == 1,
            proof_replayed,
            limits,
        })
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.query(&redis::cmd("PING")).await
    }
}

/// An evicted revoked-token marker is not missed until its grant's status is: say so at start
/// when Redis may evict (a managed Redis may refuse `CONFIG`; then nothing is said).
async fn warn_unless_noeviction(conn: &mut MultiplexedConnection) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    if let Ok(reply) = policy
        && let Some(policy) = reply.get(1)
        && policy != "noeviction"
    {
        tracing::warn!(
            policy = %policy,
            "Redis may evict keys (maxmemory-policy is not noeviction): an evicted revoked-token \
             marker lets that token work until it expires (at most 5 minutes)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis to test against (`KEYHOLE_REDIS_URL`, as `.ci/run` sets it), with a prefix of
    /// this test's own; `None` says the test is skipped.
    async fn redis(test: &str) -> Option<(String, String, RedisBackend)> {
        let Some(url) = std::env::var("KEYHOLE_REDIS_URL")
            .ok()
            .filter(|u| u.starts_with("redis://"))
        else {
            eprintln!("skipped {test}: KEYHOLE_REDIS_URL names no Redis server");
            return None;
        };
        let prefix = format!("kh-epoch-test-{}:", uuid::Uuid::new_v4().simple());
        let backend = RedisBackend::connect(&url, &prefix).await.unwrap();
        Some((url, prefix, backend))
    }

    async fn raw(url: &str, cmd: &redis::Cmd) {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async::<()>(&mut conn).await.unwrap();
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn values_of_another_epoch_read_as_absent_everywhere() {
        let Some((url, prefix, backend)) = redis("values_of_another_epoch").await else {
            return;
        };
        let key = format!("{prefix}grant:g");
        backend.put(&key, b"old".to_vec(), TTL).await.unwrap();
        assert_eq!(backend.get(&key).await.unwrap(), Some(b"old".to_vec()));
        // Another epoch, as after a restart noticed by another instance.
        raw(
            &url,
            redis::cmd("SET")
                .arg(format!("{prefix}epoch"))
                .arg("ffffffffffffffff:another-process"),
        )
        .await;
        assert_eq!(backend.get(&key).await.unwrap(), None);
        assert!(!backend.expire_existing(&key, TTL).await.unwrap());
        // A stale value counts as absent for a cache fill, which replaces it.
        let since = backend.since().await.unwrap();
        assert_eq!(
            backend
                .put_if_absent(&key, b"new".to_vec(), TTL, &since)
                .await
                .unwrap(),
            Fill::Stored
        );
        assert_eq!(
            backend
                .put_if_absent(&key, b"newer".to_vec(), TTL, &since)
                .await
                .unwrap(),
            Fill::Present
        );
        assert_eq!(backend.take(&key).await.unwrap(), Some(b"new".to_vec()));
        assert_eq!(backend.take(&key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn without_an_epoch_nothing_reads_and_the_next_write_makes_one() {
        let Some((url, prefix, backend)) = redis("without_an_epoch").await else {
            return;
        };
        let key = format!("{prefix}session:s");
        backend.put(&key, b"s".to_vec(), TTL).await.unwrap();
        raw(&url, redis::cmd("DEL").arg(format!("{prefix}epoch"))).await;
        assert_eq!(backend.get(&key).await.unwrap(), None);
        backend.put(&key, b"t".to_vec(), TTL).await.unwrap();
        assert_eq!(backend.get(&key).await.unwrap(), Some(b"t".to_vec()));
    }

    /// The epoch belongs to one Redis process: a new connection that finds an epoch naming
    /// another process (restored from its snapshot, or replicated from a former primary)
    /// starts a new one, and what was written under the old one is gone for everybody.
    #[tokio::test]
    async fn a_new_connection_replaces_an_epoch_of_another_redis_process() {
        let Some((url, prefix, backend)) = redis("a_new_connection_replaces").await else {
            return;
        };
        let epoch_key = format!("{prefix}epoch");
        raw(
            &url,
            redis::cmd("SET")
                .arg(&epoch_key)
                .arg("aaaaaaaaaaaaaaaa:0123456789abcdef0123456789abcdef01234567"),
        )
        .await;
        let key = format!("{prefix}partner:p");
        backend
            .put(&key, b"\"active\"".to_vec(), TTL)
            .await
            .unwrap();
        assert!(backend.get(&key).await.unwrap().is_some());
        let other = RedisBackend::connect(&url, &prefix).await.unwrap();
        assert_eq!(other.get(&key).await.unwrap(), None);
        assert_eq!(backend.get(&key).await.unwrap(), None);
        // While the epoch is this process's own, a new connection keeps it.
        other.put(&key, b"\"active\"".to_vec(), TTL).await.unwrap();
        let third = RedisBackend::connect(&url, &prefix).await.unwrap();
        assert!(third.get(&key).await.unwrap().is_some());
    }

    /// A fill that read the database under one epoch never lands in the next: the revocation
    /// it raced may have been lost with the old epoch, and the database read may predate it.
    #[tokio::test]
    async fn a_fill_read_under_an_epoch_that_ended_is_not_cached() {
        let Some((url, prefix, backend)) = redis("a_fill_read_under").await else {
            return;
        };
        let key = format!("{prefix}grant:g");
        let since = backend.since().await.unwrap();
        raw(&url, redis::cmd("DEL").arg(format!("{prefix}epoch"))).await;
        backend
            .put(&format!("{prefix}other"), b"x".to_vec(), TTL)
            .await
            .unwrap();
        assert_eq!(
            backend
                .put_if_absent(&key, b"active".to_vec(), TTL, &since)
                .await
                .unwrap(),
            Fill::EpochChanged
        );
        assert_eq!(backend.get(&key).await.unwrap(), None);
        let now = backend.since().await.unwrap();
        assert_eq!(
            backend
                .put_if_absent(&key, b"active".to_vec(), TTL, &now)
                .await
                .unwrap(),
            Fill::Stored
        );
    }

    #[tokio::test]
    async fn many_values_are_put_in_one_call_under_the_epoch() {
        let Some((_, prefix, backend)) = redis("many_values").await else {
            return;
        };
        let entries: Vec<_> = (0..3)
            .map(|i| (format!("{prefix}jti:{i}"), b"1".to_vec(), TTL))
            .collect();
        backend.put_many(&entries).await.unwrap();
        for (key, _, _) in &entries {
            assert_eq!(backend.get(key).await.unwrap(), Some(b"1".to_vec()));
        }
    }
}
