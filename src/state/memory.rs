//! The in-process backend: one mutex-guarded map with lazy expiry. Enough for one instance.

use super::{StateBackend, StateError};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryBackend {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

/// Expired entries are dropped when the map passes a multiple of this size, so memory stays
/// bounded without a sweeper task.
const SWEEP_EVERY: usize = 4096;

impl MemoryBackend {
    fn live(entry: &(Vec<u8>, Instant), now: Instant) -> bool {
        entry.1 > now
    }
}

#[async_trait]
impl StateBackend for MemoryBackend {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.retain(|_, entry| Self::live(entry, now));
        }
        entries.insert(key.to_owned(), (value, now + ttl));
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

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let now = Instant::now();
        let entries = self.entries.lock();
        Ok(keys
            .iter()
            .map(|key| {
                entries
                    .get(key)
                    .filter(|entry| Self::live(entry, now))
                    .map(|entry| entry.0.clone())
            })
            .collect())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.get(key).is_some_and(|entry| Self::live(entry, now)) {
            return Ok(false);
        }
        entries.insert(key.to_owned(), (value, now + ttl));
        Ok(true)
    }

    async fn replace_existing(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        match entries.get_mut(key) {
            Some(entry) if Self::live(entry, now) => {
                let old = std::mem::replace(entry, (value, now + ttl));
                Ok(Some(old.0))
            }
            _ => Ok(None),
        }
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

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.entries.lock().remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_entries_are_invisible() {
        let backend = MemoryBackend::default();
        backend
            .put("k", b"v".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(backend.get("k").await.unwrap(), None);
        assert_eq!(
            backend
                .replace_existing("k", b"w".to_vec(), Duration::from_secs(1))
                .await
                .unwrap(),
            None
        );
    }
}
