//! The Redis backend: the same contract as the in-process one, shared by every instance.
//!
//! A few multiplexed connections, used in turn: each pipelines any number of concurrent
//! commands over one socket and reconnects by itself after a failure, so the pool never holds
//! a dead connection for long. Every command has a response timeout: a Redis that hangs is a
//! Redis that is down, and callers fail closed on [`StateError::Unavailable`].

use super::{RateCheck, RateOutcome, StateBackend, StateError};
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

/// GCRA over several limits at once, on Redis's own clock (so instances' clocks do not
/// matter). KEYS: one per limit; ARGV: interval (µs) and burst per limit. Each key holds its
/// theoretical arrival time (µs). All limits are checked before any is spent, so a call refused
/// by the partner's limit does not use up its grant's. Returns {1, remaining…} or
/// {0, index, retry_after_µs}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local over = tat - now - interval * (burst - 1)
  if over > 0 then return {0, i - 1, string.format('%.0f', over)} end
  tats[i] = tat
end
local out = {1}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[i] + interval
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  out[#out + 1] = math.floor((interval * burst - (tat - now)) / interval)
end
return out
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
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(format!("redis: {e}"))
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
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            replace_existing: redis::Script::new(REPLACE_EXISTING),
            decr_existing: redis::Script::new(DECR_EXISTING),
            gcra: redis::Script::new(GCRA),
        })
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

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("MGET")
            .arg(keys)
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
            let interval = u64::try_from(check.interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation
                .key(&check.key)
                .arg(interval)
                .arg(check.burst.max(1));
        }
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        let number = |v: &redis::Value| -> Result<i64, StateError> {
            redis::from_redis_value_ref::<i64>(v).map_err(|e| unavailable(e.into()))
        };
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
            _ => Err(StateError::Unavailable(
                "redis: unexpected rate-limit reply".into(),
            )),
        }
    }

    async fn ping(&self) -> Result<(), StateError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }
}
