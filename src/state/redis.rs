//! The Redis backend: the same contract as the in-process one, shared by every instance.
//!
//! A few multiplexed connections, used in turn: each pipelines any number of concurrent
//! commands over one socket and reconnects by itself after a failure, so the pool never holds
//! a dead connection for long. Every command has a response timeout: a Redis that hangs is a
//! Redis that is down, and callers fail closed on [`StateError::Unavailable`].

use super::{StateBackend, StateError};
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

pub struct RedisBackend {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    replace_existing: redis::Script,
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

    async fn ping(&self) -> Result<(), StateError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(unavailable)
    }
}
