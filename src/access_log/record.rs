use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What became of a partner call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    NotModified,
    Denied,
    NotFound,
    RateLimited,
    InvalidToken,
    UpstreamError,
    /// The gateway itself could not serve (shared state or database down): not the partner's
    /// doing, so no alert rule counts it.
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::NotModified,
        Outcome::Denied,
        Outcome::NotFound,
        Outcome::RateLimited,
        Outcome::InvalidToken,
        Outcome::UpstreamError,
        Outcome::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotModified => "not_modified",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not_found",
            Outcome::RateLimited => "rate_limited",
            Outcome::InvalidToken => "invalid_token",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One partner call, as the proxy saw it. `fields` are exactly the scopes whose values left in
/// the answer; `record_ids` exactly the records it disclosed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub client_id: Option<String>,
    pub grant_id: Option<String>,
    /// The upstream customer id whose data was asked for.
    pub customer_id: Option<String>,
    pub resource: String,
    pub resource_id: Option<String>,
    pub record_ids: Vec<String>,
    pub fields: Vec<String>,
    pub outcome: Outcome,
    pub status: u16,
    pub client_ip: Option<String>,
}

impl AccessRecord {
    /// Timestamps are kept to the microsecond, the precision both databases store, so a record
    /// hashes the same before and after its round trip.
    pub fn normalised(mut self) -> Self {
        self.at = self.at.trunc_subsecs(6);
        self
    }
}

/// A record with its place in its writer's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedRecord {
    /// The database row: the order searches page in. `0` for a record still only in a
    /// journal; the hash does not cover it, since the database assigns it on import.
    #[serde(default)]
    pub id: i64,
    /// The writer (one per gateway instance) whose chain holds the record.
    pub chain: String,
    /// The record's place in its chain: 1, 2, 3…
    pub seq: i64,
    #[serde(flatten)]
    pub record: AccessRecord,
    pub prev_hash: String,
    pub hash: String,
}
