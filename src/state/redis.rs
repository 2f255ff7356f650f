//! The Redis backend: the same contract as the in-process one, shared by every instance.
//!
//! A few multiplexed connections, used in turn: each pipelines any number of concurrent
//! commands over one socket and reconnects by itself after a failure, so the pool never holds
//! a dead connection for long. Every command has a response timeout: a Redis that hangs is a
//! Redis that is down, and callers fail closed on [`StateError::Unavailable`].

use super::gate::{GATE_LUA, GCRA_LUA};
use super::{GateCheck, GateReply, RateCheck, RateOutcome, StateBackend, StateError};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Multiplexed connections per instance; each carries many commands at once.
const CONNECTIONS: usize = 4;
const TIMEOUT: Duration = Duration::from_millis(500);

/// Replaces the value of an existing key and returns the old one; nothing when absent.
const REPLACE_EXISTING: &str = r"
local old = redis.call('GET', KEYS[1])
if old then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return old
";

/// Takes one off a counter that exists and is above zero; an expired counter stays gone
/// (a plain DECR would bring it back without a time to live).
const DECR_EXISTING: &str = r"
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
";

pub struct RedisBackend {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    replace_existing: redis::Script,
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
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            connections.push(
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map_err(unavailable)?,
            );
        }
        let backend = Self {
            connections,
            next: AtomicUsize::new(0),
            replace_existing: redis::Script::new(REPLACE_EXISTING),
            decr_existing: redis::Script::new(DECR_EXISTING),
            gcra: redis::Script::new(GCRA_LUA),
            gate: redis::Script::new(GATE_LUA),
        };
        // Loaded once here, so every call is an EVALSHA from the first; after a Redis restart
        // the invocation reloads a script by itself (NOSCRIPT, then SCRIPT LOAD).
        let mut connection = backend.connection();
        for script in [&backend.gcra, &backend.gate] {
            script
                .prepare_invoke()
                .load_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(backend)
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StateError> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn replace_existing(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.replace_existing
            .key(key)
            .arg(value)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        redis::cmd("GETDEL")
            .arg(key)
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
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
        pipe.query_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn decr_existing(&self, keys: &[String]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.decr_existing.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn rate_limit(&self, checks: &[RateCheck]) -> Result<RateOutcome, StateError> {
        let mut invocation = self.gcra.prepare_invoke();
        for check in checks {
            invocation
                .key(&check.key)
                .arg(micros(check.interval))
                .arg(check.burst.max(1));
        }
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        rate_outcome(&reply)
    }

    async fn gate(&self, check: &GateCheck<'_>) -> Result<GateReply, StateError> {
        let mut invocation = self.gate.prepare_invoke();
        invocation
            .key(check.grant_key)
            .key(check.partner_key)
            .key(check.jti_key)
            .arg(check.now.timestamp())
            .arg(check.now.timestamp_subsec_nanos());
        for limit in check.limits.iter().flatten() {
            invocation
                .key(limit.key)
                .arg(micros(limit.interval))
                .arg(limit.burst.max(1));
        }
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
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
        let limits = match verdict {
            [flag] if number(flag)? == -1 => None,
            verdict => Some(rate_outcome(verdict)?),
        };
        Ok(GateReply {
            grant,
            partner,
            jti_revoked: number(jti)? == 1,
            limits,
        })
    }

    async fn ping(&self) -> Result<(), StateError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }
}
