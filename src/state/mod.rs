//! Shared ephemeral state: authorization codes, pushed authorization requests, pending consent
//! requests, customer sessions, grant status and revoked access-token ids.
//!
//! Backends implement a small key-value contract ([`StateBackend`]); [`SharedState`] gives it
//! types. The in-process backend serves one instance; a Redis backend (same contract) lets
//! several instances share revocation, codes and sessions.

mod epoch;
mod gate;
mod memory;
mod redis;

pub use self::redis::RedisBackend;
pub use gate::{CallGate, GateCheck, GateLimit, GateReply, statuses_allow};
pub use memory::MemoryBackend;

use crate::domain::{ClientId, CodeChallenge, CustomerId, FieldSet, GrantId};
use crate::secrets::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("shared state is unavailable: {0}")]
    Unavailable(String),
    #[error("shared state holds a value this version cannot read: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The contract every backend keeps. Every key expires; every operation is atomic.
#[async_trait]
pub trait StateBackend: Send + Sync + 'static {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StateError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Stores the value only when the key is absent (atomically), and only while the backend's
    /// epoch is still `since` (see `epoch.rs`). Caches filled from the database use it, so
    /// they never overwrite a newer decision, nor land in an epoch that lost one.
    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        since: &Since,
    ) -> Result<Fill, StateError>;
    /// The epoch values are written under now; taken before a database read that will fill a
    /// cache. The in-process backend has one epoch for its whole life.
    async fn since(&self) -> Result<Since, StateError>;
    /// Stores several values in one round trip.
    async fn put_many(&self, entries: &[(String, Vec<u8>, Duration)]) -> Result<(), StateError>;
    /// Removes a key and returns its value, atomically: one of two racing takers wins.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Extends the time to live of an existing key without writing its value; true when the
    /// key was there. A request in flight then cannot re-create what a sign-out deleted.
    async fn expire_existing(&self, key: &str, ttl: Duration) -> Result<bool, StateError>;
    async fn delete(&self, key: &str) -> Result<(), StateError>;
    async fn ping(&self) -> Result<(), StateError>;
    /// Applies GCRA limits atomically: all are spent, or none.
    async fn rate_limit(&self, checks: &[RateCheck]) -> Result<RateOutcome, StateError>;
    /// The partner call's gate (see `gate.rs`): grant, partner and token status, and the
    /// limits spent only when all three allow the call; atomically, in one round trip.
    async fn gate(&self, check: &GateCheck<'_>) -> Result<GateReply, StateError>;
    /// Whether other instances see the same limits. When not (one instance), the partner
    /// path's local limiter is the whole truth and this backend is not asked again.
    fn shares_limits(&self) -> bool;
    /// Adds one to each counter and (re)sets its time to live, in one round trip; returns
    /// the new counts in the order of the keys.
    async fn incr(&self, keys: &[String], ttl: Duration) -> Result<Vec<u64>, StateError>;
    /// Takes one off each counter that exists (never below zero, never creating one).
    async fn decr_existing(&self, keys: &[String]) -> Result<(), StateError>;
}

/// The epoch a cache fill was read under (opaque; `epoch.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since(pub(crate) Option<String>);

/// What a cache fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Stored,
    /// A value written in this epoch was there: it stands.
    Present,
    /// The epoch changed since the database was read: nothing stored, the read is this call's
    /// answer only.
    EpochChanged,
}

/// One GCRA limit: one call per `interval`, `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCheck {
    pub key: String,
    pub interval: Duration,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateOutcome {
    /// Calls left in each limit's burst, in the order of the checks.
    Allowed { remaining: Vec<u32> },
    /// The first limit (by index) that refused, and when it would allow.
    Refused { index: usize, retry_after: Duration },
}

/// What a code stands for until it is redeemed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCode {
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub code_challenge: CodeChallenge,
    pub grant_id: GrantId,
    pub customer_id: CustomerId,
    pub scopes: FieldSet,
    /// When the code stops working: a code given back after a failed exchange keeps it.
    /// Absent in codes written before it was kept.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum CodeEntry {
    Issued(IssuedCode),
    Redeemed {
        grant_id: GrantId,
        /// Whose code it was: only that client's replay revokes the grant. Absent in markers
        /// written before it was kept; those are treated as the presenter's own.
        #[serde(default)]
        client_id: Option<ClientId>,
    },
}

/// What a code stands for when presented, before anything is spent.
#[derive(Debug)]
pub enum CodeLookup {
    /// Not yet used; checking it spends nothing.
    Issued(IssuedCode),
    /// Already used, by an exchange that issued tokens of `grant_id`.
    Redeemed {
        grant_id: GrantId,
        client_id: Option<ClientId>,
    },
    /// Unknown or expired.
    Unknown,
}

/// A consent request between the consent page and the customer's decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingConsent {
    pub customer_id: CustomerId,
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub scopes: FieldSet,
    pub state: Option<String>,
    pub code_challenge: CodeChallenge,
}

/// An authorization request pushed to `POST /oauth/par` (RFC 9126), as it passed the checks:
/// normalised (the canonical scope text, a state within its bound), so what is kept is bounded
/// whatever the partner sent. Kept under its client and the hash of its `request_uri`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedRequest {
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub scopes: FieldSet,
    pub state: Option<String>,
    pub code_challenge: CodeChallenge,
    /// When the `request_uri` stops working, by the app's clock (the backend's time to live is
    /// only the backstop that frees the memory).
    pub expires_at: DateTime<Utc>,
}

/// A sign-in sent to an OpenID provider, between the redirect there and its answer back.
/// Kept here, not in the browser, so the browser's cookie is only a random key to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOidcSignIn {
    pub state: Secret,
    pub nonce: Secret,
    pub pkce_verifier: Secret,
    /// The `max_age` asked for, which the ID token's `auth_time` must then meet.
    pub max_age_seconds: Option<u64>,
    /// Where the caller wants the person once signed in (its own page; it checks it again).
    pub return_to: Option<String>,
}

/// What a signed-in browser is, kept in shared state under the hash of its cookie's value.
/// Each kind has its own key space: a customer's session never opens the security console.
pub trait SessionRecord: Serialize + DeserializeOwned + Send + Sync {
    const KIND: &'static str;
    fn csrf_token(&self) -> &str;
    fn created_at(&self) -> DateTime<Utc>;
}

/// A customer's portal session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub customer_id: CustomerId,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    /// When the customer last proved who they are: the password check, or the provider's
    /// `auth_time`. Unknown (absent, or a session from before this field) counts as too old
    /// for consent, revocation and the download.
    #[serde(default)]
    pub auth_time: Option<DateTime<Utc>>,
    /// How the portal greets a customer of the provider (their name or address from the ID
    /// token, bounded); built-in accounts are greeted by their sign-in address.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Started by a sign-in at the insurer's provider: a sign-out there (Back-Channel Logout)
    /// ends it.
    #[serde(default)]
    pub via_provider: bool,
}

impl SessionRecord for Session {
    const KIND: &'static str = "session";
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

/// A security-team member's console session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub user_id: String,
    pub email: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    /// Signed in with a one-time password: nothing but choosing a real one is allowed.
    pub must_set_password: bool,
    /// A digest of the password hash the session signed in under: once the password changes,
    /// every session that another browser holds on the old one (or on the one-time one) ends.
    /// Sessions from before this field find it empty and end too (fail closed).
    #[serde(default)]
    pub password_digest: String,
}

impl ConsoleSession {
    /// The digest [`Self::password_digest`] holds for a stored password hash.
    pub fn digest_of(password_hash: &str) -> String {
        crate::secrets::token_hash(password_hash)
    }
}

impl SessionRecord for ConsoleSession {
    const KIND: &'static str = "console_session";
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GrantStatus {
    Active { expires_at: DateTime<Utc> },
    Revoked,
}

/// Whether a partner may call at all; suspension stops every grant of it at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartnerState {
    Active,
    Suspended,
}

impl GrantStatus {
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self, GrantStatus::Active { expires_at } if *expires_at > now)
    }
}

/// Counted sign-in attempts (failures, once successes are forgiven) within the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignInCounts {
    /// This account from this address.
    pub pair: u64,
    /// This account from anywhere.
    pub account: u64,
    /// This address, for any account.
    pub address: u64,
}

/// A source address as limits see it: an IPv4 address, or an IPv6 /64 (one subscriber's
/// allocation: rotating through it buys nothing).
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Typed access to the backend. Keys are `{prefix}{kind}:{id}`; secrets are keyed by hash.
#[derive(Clone)]
pub struct SharedState {
    backend: Arc<dyn StateBackend>,
    prefix: String,
}

impl SharedState {
    pub fn new(backend: Arc<dyn StateBackend>, prefix: impl Into<String>) -> Self {
        Self {
            backend,
            prefix: prefix.into(),
        }
    }

    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryBackend::default()), "kh:")
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.backend.put(key, serde_json::to_vec(value)?, ttl).await
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        match self.backend.get(key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        self.backend.ping().await
    }

    /// The limit on calls without a valid token, per source address and shared by every
    /// instance, so a flood of junk can grow neither the log nor the audit trail.
    pub async fn limit_unauthenticated(
        &self,
        source: IpAddr,
        interval: Duration,
        burst: u32,
    ) -> Result<RateOutcome, StateError> {
        let check = RateCheck {
            key: self.key("rl:anon", &source_key(source)),
            interval,
            burst,
        };
        self.backend.rate_limit(std::slice::from_ref(&check)).await
    }

    /// Counts a sign-in attempt before the password is checked (so parallel guesses cannot all
    /// pass one check): against the account from this address, the account from anywhere, and
    /// the address. Returns the three counts, in that order. Each lives `window` after its
    /// latest attempt.
    pub async fn count_sign_in_attempt(
        &self,
        account: &str,
        source: Option<IpAddr>,
        window: Duration,
    ) -> Result<SignInCounts, StateError> {
        let counts = self
            .backend
            .incr(&self.sign_in_keys(account, source), window)
            .await?;
        let count = |i: usize| counts.get(i).copied().unwrap_or(u64::MAX);
        Ok(SignInCounts {
            pair: count(0),
            account: count(1),
            address: count(2),
        })
    }

    /// The sign-in counters of an attempt: account from this address, account, address.
    /// Attempts whose address is unknown share one address counter.
    fn sign_in_keys(&self, account: &str, source: Option<IpAddr>) -> [String; 3] {
        let address = source.map(source_key).unwrap_or_default();
        [
            self.key("signin:pair", &format!("{account}:{address}")),
            self.key("signin:account", account),
            self.key("signin:addr", &address),
        ]
    }

    /// Takes back a counted attempt that succeeded: only failures count.
    pub async fn forgive_sign_in_attempt(
        &self,
        account: &str,
        source: Option<IpAddr>,
    ) -> Result<(), StateError> {
        self.backend
            .decr_existing(&self.sign_in_keys(account, source))
            .await
    }

    /// Counts a consent request parked for a customer; the count lives as long as the
    /// newest request, so it covers every request that may still be pending.
    pub async fn count_pending_consent(
        &self,
        customer: &str,
        ttl: Duration,
    ) -> Result<u64, StateError> {
        let counts = self
            .backend
            .incr(&[self.key("consents", customer)], ttl)
            .await?;
        Ok(counts.first().copied().unwrap_or(u64::MAX))
    }

    pub async fn put_code(
        &self,
        code_hash: &str,
        code: IssuedCode,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.key("code", code_hash);
        self.put_json(&key, &CodeEntry::Issued(code), ttl).await
    }

    /// Reads a code without spending it, so the client, `redirect_uri` and PKCE can be
    /// checked first: a wrong verifier must not burn the partner's code.
    pub async fn code(&self, code_hash: &str) -> Result<CodeLookup, StateError> {
        let key = self.key("code", code_hash);
        Ok(match self.get_json::<CodeEntry>(&key).await? {
            Some(CodeEntry::Issued(code)) => CodeLookup::Issued(code),
            Some(CodeEntry::Redeemed {
                grant_id,
                client_id,
            }) => CodeLookup::Redeemed {
                grant_id,
                client_id,
            },
            None => CodeLookup::Unknown,
        })
    }

    /// A consent request is keyed by its customer as well as its id, so only its customer's
    /// decision can find it (and spend it).
    fn consent_key(&self, customer: CustomerId, id: &str) -> String {
        self.key("consent", &format!("{customer}:{id}"))
    }

    pub async fn put_pending_consent(
        &self,
        id: &str,
        pending: &PendingConsent,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.consent_key(pending.customer_id, id);
        self.put_json(&key, pending, ttl).await
    }

    /// Consent requests are single-use too: a decision cannot be replayed. Another
    /// customer's decision finds nothing and spends nothing.
    pub async fn take_pending_consent(
        &self,
        customer: CustomerId,
        id: &str,
    ) -> Result<Option<PendingConsent>, StateError> {
        match self.backend.take(&self.consent_key(customer, id)).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A pushed request is keyed by its client as well as its `request_uri`'s hash, so another
    /// client's lookup finds nothing (and spends nothing).
    fn pushed_key(&self, client: &ClientId, handle_hash: &str) -> String {
        self.key("par", &format!("{client}:{handle_hash}"))
    }

    pub async fn put_pushed_request(
        &self,
        handle_hash: &str,
        pushed: &PushedRequest,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.pushed_key(&pushed.client_id, handle_hash);
        self.put_json(&key, pushed, ttl).await
    }

    /// Reads a pushed request without spending it: the authorization endpoint may see the same
    /// `request_uri` twice (before and after the customer signs in).
    pub async fn pushed_request(
        &self,
        client: &ClientId,
        handle_hash: &str,
    ) -> Result<Option<PushedRequest>, StateError> {
        self.get_json(&self.pushed_key(client, handle_hash)).await
    }

    /// Spends a pushed request, atomically: of two racing consents for one `request_uri`, one
    /// finds it.
    pub async fn take_pushed_request(
        &self,
        client: &ClientId,
        handle_hash: &str,
    ) -> Result<Option<PushedRequest>, StateError> {
        match self
            .backend
            .take(&self.pushed_key(client, handle_hash))
            .await?
        {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Counts a request pushed by `client` in the fixed window `window` (e.g. the minute's
    /// number); the count lives `ttl` after the latest push, past the window's end.
    pub async fn count_push(
        &self,
        client: &ClientId,
        window: i64,
        ttl: Duration,
    ) -> Result<u64, StateError> {
        let counts = self
            .backend
            .incr(
                &[self.key("par_pushes", &format!("{client}:{window}"))],
                ttl,
            )
            .await?;
        Ok(counts.first().copied().unwrap_or(u64::MAX))
    }

    /// Counts a sign-in started at an OpenID provider from `source` (unknown addresses share
    /// one count); the count lives `window` from the first.
    pub async fn count_oidc_start(
        &self,
        purpose: &str,
        source: Option<IpAddr>,
        window: Duration,
    ) -> Result<u64, StateError> {
        let address = source.map(source_key).unwrap_or_default();
        let counts = self
            .backend
            .incr(
                &[self.key(&format!("oidc_start:{purpose}"), &address)],
                window,
            )
            .await?;
        Ok(counts.first().copied().unwrap_or(u64::MAX))
    }

    /// A pending OpenID Connect sign-in of one relying party (`purpose`: `console`,
    /// `portal`), under the hash of the random key its browser holds.
    /// Records that a customer signed out at the provider (Back-Channel Logout): their portal
    /// sessions started at or before `at` end at their next request. Kept as long as a session
    /// can live.
    pub async fn put_provider_sign_out(
        &self,
        customer: CustomerId,
        at: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.put_json(
            &self.key("provider_signed_out", &customer.to_string()),
            &at,
            ttl,
        )
        .await
    }

    pub async fn provider_sign_out(
        &self,
        customer: CustomerId,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        self.get_json(&self.key("provider_signed_out", &customer.to_string()))
            .await
    }

    /// Remembers which customer a provider session (`sid`, by the hash of issuer and sid) signed
    /// in, for a logout token that names only the session.
    pub async fn put_provider_session(
        &self,
        sid_hash: &str,
        customer: CustomerId,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.put_json(&self.key("provider_sid", sid_hash), &customer, ttl)
            .await
    }

    pub async fn provider_session(&self, sid_hash: &str) -> Result<Option<CustomerId>, StateError> {
        self.get_json(&self.key("provider_sid", sid_hash)).await
    }

    /// True the first time a logout token's id (by hash) is seen within `ttl`, on any instance.
    pub async fn first_logout_token(
        &self,
        jti_hash: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let counts = self
            .backend
            .incr(&[self.key("logout_jti", jti_hash)], ttl)
            .await?;
        Ok(counts.first().is_some_and(|n| *n == 1))
    }

    /// The shared-state key of a DPoP proof's `jti` (see `dpop::replay_id`).
    pub fn dpop_proof_key(&self, replay_id: &str) -> String {
        self.key("dpop", replay_id)
    }

    /// True the first time a DPoP proof's `jti` is seen within `ttl`, on any instance. The
    /// partner path spends it inside the gate instead (one round trip per call).
    pub async fn first_dpop_proof(
        &self,
        replay_id: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let counts = self
            .backend
            .incr(&[self.dpop_proof_key(replay_id)], ttl)
            .await?;
        Ok(counts.first().is_some_and(|n| *n == 1))
    }

    /// Spends a DPoP proof's key (from [`SharedState::dpop_proof_key`]) outside the gate.
    pub async fn spend_dpop_key(&self, key: &str, ttl: Duration) -> Result<(), StateError> {
        self.backend.incr(&[key.to_owned()], ttl).await.map(drop)
    }

    /// Un-spends a logout token's id whose logout could not be recorded, so that the
    /// provider's retry is applied.
    pub async fn forget_logout_token(&self, jti_hash: &str) -> Result<(), StateError> {
        self.backend.delete(&self.key("logout_jti", jti_hash)).await
    }

    /// True the first time a client assertion's id (by the hash of client id and `jti`) is
    /// seen within `ttl`, on any instance: one atomic put-if-absent, so of two racing uses
    /// exactly one is first. Written in the current epoch, whichever it is.
    pub async fn first_client_assertion(
        &self,
        jti_hash: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let fill = self
            .backend
            .put_if_absent(
                &self.key("assertion_jti", jti_hash),
                b"1".to_vec(),
                ttl,
                &Since::default(),
            )
            .await?;
        Ok(fill == Fill::Stored)
    }

    pub async fn put_oidc_sign_in(
        &self,
        purpose: &str,
        binding_hash: &str,
        pending: &PendingOidcSignIn,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.key(&format!("oidc:{purpose}"), binding_hash);
        self.put_json(&key, pending, ttl).await
    }

    /// Single use: the answer that takes it is the only one; a replayed answer finds nothing.
    pub async fn take_oidc_sign_in(
        &self,
        purpose: &str,
        binding_hash: &str,
    ) -> Result<Option<PendingOidcSignIn>, StateError> {
        let key = self.key(&format!("oidc:{purpose}"), binding_hash);
        match self.backend.take(&key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn put_session<S: SessionRecord>(
        &self,
        session_hash: &str,
        session: &S,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.put_json(&self.key(S::KIND, session_hash), session, ttl)
            .await
    }

    pub async fn session<S: SessionRecord>(
        &self,
        session_hash: &str,
    ) -> Result<Option<S>, StateError> {
        self.get_json(&self.key(S::KIND, session_hash)).await
    }

    /// Extends a session's idle timeout without writing it back: false when it is gone
    /// (signed out, or replaced by a new sign-in, while this request was in flight).
    pub async fn touch_session<S: SessionRecord>(
        &self,
        session_hash: &str,
        idle: Duration,
    ) -> Result<bool, StateError> {
        self.backend
            .expire_existing(&self.key(S::KIND, session_hash), idle)
            .await
    }

    pub async fn delete_session<S: SessionRecord>(
        &self,
        session_hash: &str,
    ) -> Result<(), StateError> {
        self.backend.delete(&self.key(S::KIND, session_hash)).await
    }

    pub async fn put_grant_status(
        &self,
        grant: GrantId,
        status: GrantStatus,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.put_json(&self.key("grant", &grant.to_string()), &status, ttl)
            .await
    }

    /// Caches a status read from the database unless one was written meanwhile (by any
    /// instance): a revocation or suspension decided after our read must stand. Returns the
    /// value now in force; `gone` when it expired in between.
    async fn fill<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: T,
        gone: T,
        ttl: Duration,
        since: &Since,
    ) -> Result<T, StateError> {
        match self
            .backend
            .put_if_absent(key, serde_json::to_vec(&value)?, ttl, since)
            .await?
        {
            Fill::Stored | Fill::EpochChanged => Ok(value),
            Fill::Present => Ok(self.get_json(key).await?.unwrap_or(gone)),
        }
    }

    /// The epoch now: take it *before* reading what a fill will cache.
    pub async fn since(&self) -> Result<Since, StateError> {
        self.backend.since().await
    }

    /// Caches a grant's status read from the database; see [`Self::fill`].
    pub async fn fill_grant_status(
        &self,
        grant: GrantId,
        status: GrantStatus,
        ttl: Duration,
        since: &Since,
    ) -> Result<GrantStatus, StateError> {
        let key = self.key("grant", &grant.to_string());
        self.fill(&key, status, GrantStatus::Revoked, ttl, since)
            .await
    }

    pub async fn grant_status(&self, grant: GrantId) -> Result<Option<GrantStatus>, StateError> {
        self.get_json(&self.key("grant", &grant.to_string())).await
    }

    /// Remembers a revoked access token until it would have expired anyway.
    pub async fn revoke_jti(&self, jti: &str, ttl: Duration) -> Result<(), StateError> {
        self.backend
            .put(&self.key("jti", jti), b"1".to_vec(), ttl)
            .await
    }

    /// Remembers several revoked access tokens (each until it would have expired) in one
    /// round trip: a grant's, put back from the database.
    pub async fn revoke_jtis(&self, jtis: &[(String, Duration)]) -> Result<(), StateError> {
        let entries: Vec<_> = jtis
            .iter()
            .map(|(jti, ttl)| (self.key("jti", jti), b"1".to_vec(), *ttl))
            .collect();
        self.backend.put_many(&entries).await
    }

    pub async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StateError> {
        Ok(self.backend.get(&self.key("jti", jti)).await?.is_some())
    }

    pub async fn put_partner_state(
        &self,
        client: &ClientId,
        state: PartnerState,
        ttl: Duration,
    ) -> Result<(), StateError> {
        self.put_json(&self.key("partner", client.as_str()), &state, ttl)
            .await
    }

    /// Caches a partner's status read from the database; see [`Self::fill`].
    pub async fn fill_partner_state(
        &self,
        client: &ClientId,
        state: PartnerState,
        ttl: Duration,
        since: &Since,
    ) -> Result<PartnerState, StateError> {
        let key = self.key("partner", client.as_str());
        self.fill(&key, state, PartnerState::Suspended, ttl, since)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> IssuedCode {
        IssuedCode {
            client_id: ClientId::parse("fone-shop").unwrap(),
            redirect_uri: "https://fone.example/cb".into(),
            code_challenge: CodeChallenge::parse(
                Some("S256"),
                Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            )
            .unwrap(),
            grant_id: GrantId::random(),
            customer_id: CustomerId::random(),
            scopes: FieldSet::parse("claims:status").unwrap(),
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn a_code_reads_back_as_issued_until_it_expires() {
        let state = SharedState::in_memory();
        let issued = code();
        state
            .put_code("h", issued.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        match state.code("h").await.unwrap() {
            CodeLookup::Issued(read) => assert_eq!(read.grant_id, issued.grant_id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            state.code("nope").await.unwrap(),
            CodeLookup::Unknown
        ));
    }

    #[tokio::test]
    async fn pending_consent_is_single_use() {
        let state = SharedState::in_memory();
        let c = code();
        let pending = PendingConsent {
            customer_id: c.customer_id,
            client_id: c.client_id,
            redirect_uri: c.redirect_uri,
            scopes: c.scopes,
            state: None,
            code_challenge: c.code_challenge,
        };
        state
            .put_pending_consent("p", &pending, Duration::from_secs(60))
            .await
            .unwrap();
        // Another customer's decision neither finds it nor spends it.
        let other = CustomerId::random();
        assert!(
            state
                .take_pending_consent(other, "p")
                .await
                .unwrap()
                .is_none()
        );
        let owner = pending.customer_id;
        assert!(
            state
                .take_pending_consent(owner, "p")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            state
                .take_pending_consent(owner, "p")
                .await
                .unwrap()
                .is_none()
        );
    }

    fn pushed(client: &str) -> PushedRequest {
        let c = code();
        PushedRequest {
            client_id: ClientId::parse(client).unwrap(),
            redirect_uri: c.redirect_uri,
            scopes: c.scopes,
            state: Some("s".into()),
            code_challenge: c.code_challenge,
            expires_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_pushed_request_reads_back_until_taken_once_and_only_by_its_client() {
        let state = SharedState::in_memory();
        let pushed = pushed("fone-shop");
        let owner = pushed.client_id.clone();
        state
            .put_pushed_request("h", &pushed, Duration::from_secs(60))
            .await
            .unwrap();
        // Another client neither finds it nor spends it.
        let other = ClientId::parse("fix-it").unwrap();
        assert!(state.pushed_request(&other, "h").await.unwrap().is_none());
        assert!(
            state
                .take_pushed_request(&other, "h")
                .await
                .unwrap()
                .is_none()
        );
        // Reading does not spend it; taking does, once.
        for _ in 0..2 {
            assert!(state.pushed_request(&owner, "h").await.unwrap().is_some());
        }
        assert!(
            state
                .take_pushed_request(&owner, "h")
                .await
                .unwrap()
                .is_some()
        );
        assert!(state.pushed_request(&owner, "h").await.unwrap().is_none());
        assert!(
            state
                .take_pushed_request(&owner, "h")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_pushed_request_is_gone_once_its_time_to_live_has_passed() {
        let state = SharedState::in_memory();
        let pushed = pushed("fone-shop");
        state
            .put_pushed_request("h", &pushed, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            state
                .pushed_request(&pushed.client_id, "h")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            state
                .take_pushed_request(&pushed.client_id, "h")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn pushes_are_counted_per_client_and_window() {
        let state = SharedState::in_memory();
        let (a, b) = (
            ClientId::parse("fone-shop").unwrap(),
            ClientId::parse("fix-it").unwrap(),
        );
        let ttl = Duration::from_secs(60);
        assert_eq!(state.count_push(&a, 7, ttl).await.unwrap(), 1);
        assert_eq!(state.count_push(&a, 7, ttl).await.unwrap(), 2);
        assert_eq!(state.count_push(&b, 7, ttl).await.unwrap(), 1);
        assert_eq!(state.count_push(&a, 8, ttl).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_cache_fill_never_overwrites_a_suspension_written_after_its_read() {
        let state = SharedState::in_memory();
        let client = ClientId::parse("fone-shop").unwrap();
        let ttl = Duration::from_secs(60);
        // The fill read "active" from the database; the suspension lands before it writes.
        state
            .put_partner_state(&client, PartnerState::Suspended, ttl)
            .await
            .unwrap();
        let since = state.since().await.unwrap();
        let now = state
            .fill_partner_state(&client, PartnerState::Active, ttl, &since)
            .await
            .unwrap();
        assert_eq!(now, PartnerState::Suspended);
        let other = ClientId::parse("fix-it").unwrap();
        let filled = state
            .fill_partner_state(&other, PartnerState::Active, ttl, &since)
            .await
            .unwrap();
        assert_eq!(filled, PartnerState::Active);
    }

    #[tokio::test]
    async fn a_client_assertion_id_is_first_once_until_it_expires() {
        let state = SharedState::in_memory();
        let ttl = Duration::from_millis(50);
        assert!(state.first_client_assertion("h", ttl).await.unwrap());
        assert!(!state.first_client_assertion("h", ttl).await.unwrap());
        assert!(state.first_client_assertion("other", ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(state.first_client_assertion("h", ttl).await.unwrap());
    }

    #[test]
    fn grant_status_knows_expiry() {
        let now = Utc::now();
        let active = GrantStatus::Active {
            expires_at: now + chrono::Duration::seconds(1),
        };
        assert!(active.is_active_at(now));
        assert!(!active.is_active_at(now + chrono::Duration::seconds(1)));
        assert!(!GrantStatus::Revoked.is_active_at(now));
    }
}
