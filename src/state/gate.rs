//! The partner call's one question to shared state: is the grant active, the partner not
//! suspended, the token not revoked — and if so, may the call spend one unit of the grant's and
//! the partner's shared limits? One Lua script on Redis, one lock in process, so the common
//! call costs exactly one round trip.
//!
//! Limits are spent only when every status reads as allowed: a revoked or expired grant, a
//! suspended partner or a revoked token never uses up allowance. A status the backend does not
//! know (never cached, or evicted) spends nothing either; the caller asks the database, fills
//! the cache and spends separately (a second round trip on that rare path only).

use super::{GrantStatus, PartnerState, RateOutcome, SharedState, StateError};
use crate::domain::{ClientId, GrantId};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// One shared GCRA limit, keyed by a string built once per grant or partner.
#[derive(Debug, Clone, Copy)]
pub struct GateLimit<'a> {
    pub key: &'a str,
    pub interval: Duration,
    pub burst: u32,
}

/// What the backend is asked, with keys already prefixed.
#[derive(Debug, Clone, Copy)]
pub struct GateCheck<'a> {
    pub grant_key: &'a str,
    pub partner_key: &'a str,
    pub jti_key: &'a str,
    /// DPoP: the key of the call's proof `jti`, spent here (set if absent, for `ttl`) before
    /// anything else; a proof seen before refuses the call and spends nothing more.
    pub proof: Option<(&'a str, Duration)>,
    /// The caller's clock (a parameter, so expiry is testable): a grant is active while its
    /// expiry lies after this.
    pub now: DateTime<Utc>,
    /// Grant limit, then partner limit; `None` when the backend shares no limits.
    pub limits: Option<[GateLimit<'a>; 2]>,
}

/// The backend's raw answer: the status values as stored, and the limits' outcome when they
/// were spent (`None`: a status refused or was unknown, or no limits were asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateReply {
    pub grant: Option<Vec<u8>>,
    pub partner: Option<Vec<u8>>,
    pub jti_revoked: bool,
    /// The DPoP proof's `jti` was already spent: a replay.
    pub proof_replayed: bool,
    pub limits: Option<RateOutcome>,
}

/// The gate's answer, typed. `None` statuses are unknown to shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallGate {
    pub grant: Option<GrantStatus>,
    pub partner: Option<PartnerState>,
    pub jti_revoked: bool,
    pub proof_replayed: bool,
    pub limits: Option<RateOutcome>,
}

/// Whether stored status values let a call through at `now`. The memory backend decides with
/// this; the Redis script decides the same way in Lua (see [`GATE_LUA`]).
pub fn statuses_allow(
    grant: Option<&[u8]>,
    partner: Option<&[u8]>,
    jti_revoked: bool,
    now: DateTime<Utc>,
) -> bool {
    let grant_active = grant
        .and_then(|g| serde_json::from_slice::<GrantStatus>(g).ok())
        .is_some_and(|g| g.is_active_at(now));
    let partner_active = partner
        .and_then(|p| serde_json::from_slice::<PartnerState>(p).ok())
        .is_some_and(|p| p == PartnerState::Active);
    !jti_revoked && grant_active && partner_active
}

/// GCRA over `KEYS[k0..]` with (interval µs, burst) pairs from `ARGV[a0..]`, on Redis's own
/// clock so that instances' clocks do not matter. All limits are checked before any is spent,
/// so a call refused by the partner's limit does not use up its grant's. Returns
/// {1, remaining…} or {0, index, retry_after_µs}. Shared by both scripts, so the two can
/// never disagree on the arithmetic.
macro_rules! gcra_lua {
    () => {
        r"
local function gcra(k0, a0)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local n = #KEYS - k0 + 1
  local tats = {}
  for i = 1, n do
    local interval = tonumber(ARGV[a0 + 2 * i - 2])
    local burst = tonumber(ARGV[a0 + 2 * i - 1])
    local tat = tonumber(redis.call('GET', KEYS[k0 + i - 1]) or now)
    if tat < now then tat = now end
    local over = tat - now - interval * (burst - 1)
    if over > 0 then return {0, i - 1, string.format('%.0f', over)} end
    tats[i] = tat
  end
  local out = {1}
  for i = 1, n do
    local interval = tonumber(ARGV[a0 + 2 * i - 2])
    local burst = tonumber(ARGV[a0 + 2 * i - 1])
    local tat = tats[i] + interval
    redis.call('SET', KEYS[k0 + i - 1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    out[#out + 1] = math.floor((interval * burst - (tat - now)) / interval)
  end
  return out
end
"
    };
}

/// The shared limits alone (the unauthenticated limit, and the partner path's miss path).
pub(super) const GCRA_LUA: &str = concat!("#!lua", gcra_lua!(), "return gcra(1, 1)\n");

/// The gate. KEYS: the epoch, grant status, partner status, jti, the DPoP proof's jti, then
/// optionally the grant's and the partner's limit. ARGV: the caller's now (seconds,
/// nanoseconds), the proof's TTL in ms (0: no proof; KEYS[5] is then not touched), then
/// (interval µs, burst) per limit. Returns {grant or nil, partner or nil, jti revoked 0/1, -2}
/// for a replayed proof, {…, -1} when nothing else was spent, else {grant, partner, 0, GCRA
/// reply…}. A status of another epoch is nil: the database answers for it (see `epoch.rs`).
/// The proof's marker is not stamped with the epoch: any marker, even one a rollback
/// brought back, refuses (the safe side).
///
/// A grant status is `{"status":"active","expires_at":"<RFC 3339, Z>"}` as chrono writes it;
/// anything this parser cannot read counts as "not decided here" and spends nothing, so the
/// Rust side (the authority) decides and spends separately.
pub(super) const GATE_LUA: &str = concat!(
    super::epoch::epoch_lua!(),
    gcra_lua!(),
    r#"
local function epoch(s)
  local y, mo, d, h, mi, sec, frac =
    string.match(s, '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local secs = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  return secs, tonumber(string.sub(frac .. '000000000', 1, 9))
end
local function grant_active(raw, now_s, now_ns)
  if not raw then return false end
  local ok, g = pcall(cjson.decode, raw)
  if not ok or type(g) ~= 'table' or g.status ~= 'active' or type(g.expires_at) ~= 'string' then
    return false
  end
  local s, ns = epoch(g.expires_at)
  if not s then return false end
  return s > now_s or (s == now_s and ns > now_ns)
end
local s = stamp()
local grant = fresh(redis.call('GET', KEYS[2]), s)
local partner = fresh(redis.call('GET', KEYS[3]), s)
local revoked = redis.call('EXISTS', KEYS[4])
if tonumber(ARGV[3]) > 0 and not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[3]) then
  return {grant, partner, revoked, -2}
end
if #KEYS < 7 or revoked == 1 or partner ~= '"active"'
  or not grant_active(grant, tonumber(ARGV[1]), tonumber(ARGV[2])) then
  return {grant, partner, revoked, -1}
end
local out = {grant, partner, 0}
local verdict = gcra(6, 4)
for i = 1, #verdict do out[#out + 1] = verdict[i] end
return out
"#
);

impl SharedState {
    /// The status key of a grant; built once per grant by the caller's cache.
    pub fn grant_status_key(&self, grant: GrantId) -> String {
        self.key("grant", &grant.to_string())
    }

    /// The shared limit key of a grant.
    pub fn grant_limit_key(&self, grant: GrantId) -> String {
        self.key("rl:grant", &grant.to_string())
    }

    /// The status key of a partner; built once per partner by the caller's cache.
    pub fn partner_status_key(&self, client: &ClientId) -> String {
        self.key("partner", client.as_str())
    }

    /// The shared limit key of a partner.
    pub fn partner_limit_key(&self, client: &ClientId) -> String {
        self.key("rl:partner", client.as_str())
    }

    /// The revocation key of an access token.
    pub fn jti_key(&self, jti: &str) -> String {
        self.key("jti", jti)
    }

    /// Asks the gate once. `limits` are passed on only when the backend shares limits across
    /// instances; otherwise the caller's local limiter is the whole truth.
    pub async fn gate(&self, mut check: GateCheck<'_>) -> Result<CallGate, StateError> {
        if !self.backend.shares_limits() {
            check.limits = None;
        }
        let reply = self.backend.gate(&check).await?;
        Ok(CallGate {
            grant: reply
                .grant
                .map(|v| serde_json::from_slice(&v))
                .transpose()?,
            partner: reply
                .partner
                .map(|v| serde_json::from_slice(&v))
                .transpose()?,
            jti_revoked: reply.jti_revoked,
            proof_replayed: reply.proof_replayed,
            limits: reply.limits,
        })
    }

    /// The shared limits alone, for a call whose status shared state did not know: the
    /// database answered, and now the call spends (see the module doc).
    pub async fn spend_limits(
        &self,
        limits: [GateLimit<'_>; 2],
    ) -> Result<RateOutcome, StateError> {
        let checks = limits.map(|l| super::RateCheck {
            key: l.key.to_owned(),
            interval: l.interval,
            burst: l.burst,
        });
        self.backend.rate_limit(&checks).await
    }

    /// Whether the backend shares limits across instances (Redis) or not (in process).
    pub fn shares_limits(&self) -> bool {
        self.backend.shares_limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryBackend, RedisBackend, StateBackend};
    use std::sync::Arc;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn active_until(s: &str) -> Vec<u8> {
        serde_json::to_vec(&GrantStatus::Active { expires_at: at(s) }).unwrap()
    }

    fn limits<'a>(grant: &'a str, partner: &'a str, burst: u32) -> Option<[GateLimit<'a>; 2]> {
        let interval = Duration::from_secs(100);
        Some([
            GateLimit {
                key: grant,
                interval,
                burst,
            },
            GateLimit {
                key: partner,
                interval,
                burst: 1000,
            },
        ])
    }

    /// Every backend the tests can reach: in process always, Redis when
    /// `KEYHOLE_REDIS_URL` names one (each with keys of its own).
    async fn backends() -> Vec<(String, Arc<dyn StateBackend>)> {
        let prefix = format!("kh-gate-test-{}:", uuid::Uuid::new_v4().simple());
        let mut out: Vec<(String, Arc<dyn StateBackend>)> =
            vec![(prefix.clone(), Arc::new(MemoryBackend::default()))];
        if let Some(url) = std::env::var("KEYHOLE_REDIS_URL")
            .ok()
            .filter(|u| u.starts_with("redis://"))
        {
            out.push((
                prefix.clone(),
                Arc::new(RedisBackend::connect(&url, &prefix).await.unwrap()),
            ));
        }
        out
    }

    struct Keys {
        grant: String,
        partner: String,
        jti: String,
        rl_grant: String,
        rl_partner: String,
    }

    fn keys(prefix: &str) -> Keys {
        Keys {
            grant: format!("{prefix}grant:g"),
            partner: format!("{prefix}partner:p"),
            jti: format!("{prefix}jti:j"),
            rl_grant: format!("{prefix}rl:grant:g"),
            rl_partner: format!("{prefix}rl:partner:p"),
        }
    }

    fn check<'a>(k: &'a Keys, now: &str, burst: u32) -> GateCheck<'a> {
        GateCheck {
            grant_key: &k.grant,
            partner_key: &k.partner,
            jti_key: &k.jti,
            proof: None,
            now: at(now),
            limits: limits(&k.rl_grant, &k.rl_partner, burst),
        }
    }

    async fn put(backend: &dyn StateBackend, key: &str, value: &[u8]) {
        backend
            .put(key, value.to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_active_call_spends_both_limits_in_one_answer() {
        for (prefix, backend) in backends().await {
            let k = keys(&prefix);
            put(&*backend, &k.grant, &active_until("2030-01-01T00:00:00.5Z")).await;
            put(&*backend, &k.partner, br#""active""#).await;
            let now = "2030-01-01T00:00:00.25Z";
            for (left, partner_left) in [(1, 999), (0, 998)] {
                let reply = backend.gate(&check(&k, now, 2)).await.unwrap();
                assert_eq!(
                    reply.limits,
                    Some(RateOutcome::Allowed {
                        remaining: vec![left, partner_left]
                    }),
                    "{prefix}"
                );
                assert!(!reply.jti_revoked);
                assert!(reply.grant.is_some() && reply.partner.is_some());
            }
            match backend.gate(&check(&k, now, 2)).await.unwrap().limits {
                Some(RateOutcome::Refused { index, retry_after }) => {
                    assert_eq!(index, 0);
                    assert!(retry_after > Duration::from_secs(90), "{retry_after:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn refused_or_unknown_statuses_spend_nothing() {
        for (prefix, backend) in backends().await {
            let k = keys(&prefix);
            let grant = active_until("2030-01-01T00:00:01Z");
            // Nothing known yet: nothing spent, everything reported unknown.
            let reply = backend
                .gate(&check(&k, "2030-01-01T00:00:00Z", 1))
                .await
                .unwrap();
            assert_eq!(
                reply,
                GateReply {
                    grant: None,
                    partner: None,
                    jti_revoked: false,
                    proof_replayed: false,
                    limits: None
                },
                "{prefix}"
            );
            put(&*backend, &k.grant, &grant).await;
            put(&*backend, &k.partner, br#""suspended""#).await;
            assert_eq!(
                backend
                    .gate(&check(&k, "2030-01-01T00:00:00Z", 1))
                    .await
                    .unwrap()
                    .limits,
                None
            );
            put(&*backend, &k.partner, br#""active""#).await;
            // Expired at exactly its expiry, as `GrantStatus::is_active_at` has it.
            assert_eq!(
                backend
                    .gate(&check(&k, "2030-01-01T00:00:01Z", 1))
                    .await
                    .unwrap()
                    .limits,
                None
            );
            put(&*backend, &k.jti, b"1").await;
            let reply = backend
                .gate(&check(&k, "2030-01-01T00:00:00Z", 1))
                .await
                .unwrap();
            assert!(reply.jti_revoked);
            assert_eq!(reply.limits, None);
            put(
                &*backend,
                &k.grant,
                &serde_json::to_vec(&GrantStatus::Revoked).unwrap(),
            )
            .await;
            backend.delete(&k.jti).await.unwrap();
            assert_eq!(
                backend
                    .gate(&check(&k, "2030-01-01T00:00:00Z", 1))
                    .await
                    .unwrap()
                    .limits,
                None
            );
            // After all those refusals the one-call burst is still whole.
            put(&*backend, &k.grant, &grant).await;
            assert_eq!(
                backend
                    .gate(&check(&k, "2030-01-01T00:00:00Z", 1))
                    .await
                    .unwrap()
                    .limits,
                Some(RateOutcome::Allowed {
                    remaining: vec![0, 999]
                }),
                "{prefix}"
            );
        }
    }

    #[tokio::test]
    async fn without_limits_the_gate_answers_status_only() {
        for (prefix, backend) in backends().await {
            let k = keys(&prefix);
            put(&*backend, &k.grant, &active_until("2030-01-01T00:00:01Z")).await;
            put(&*backend, &k.partner, br#""active""#).await;
            let mut c = check(&k, "2030-01-01T00:00:00Z", 1);
            c.limits = None;
            let reply = backend.gate(&c).await.unwrap();
            assert_eq!(reply.limits, None);
            assert!(reply.grant.is_some() && reply.partner.is_some());
        }
    }

    #[tokio::test]
    async fn a_proof_is_spent_once_and_a_replay_spends_nothing_else() {
        for (prefix, backend) in backends().await {
            let k = keys(&prefix);
            put(&*backend, &k.grant, &active_until("2030-01-01T00:00:01Z")).await;
            put(&*backend, &k.partner, br#""active""#).await;
            let proof_key = format!("{prefix}dpop:p1");
            let mut c = check(&k, "2030-01-01T00:00:00Z", 2);
            c.proof = Some((&proof_key, Duration::from_secs(120)));
            let first = backend.gate(&c).await.unwrap();
            assert!(!first.proof_replayed, "{prefix}");
            assert_eq!(
                first.limits,
                Some(RateOutcome::Allowed {
                    remaining: vec![1, 999]
                })
            );
            let replay = backend.gate(&c).await.unwrap();
            assert!(replay.proof_replayed, "{prefix}");
            assert_eq!(replay.limits, None, "a replay spends no allowance");
            // Another proof goes through, with the burst the replay left whole.
            let other_key = format!("{prefix}dpop:p2");
            c.proof = Some((&other_key, Duration::from_secs(120)));
            let other = backend.gate(&c).await.unwrap();
            assert!(!other.proof_replayed);
            assert_eq!(
                other.limits,
                Some(RateOutcome::Allowed {
                    remaining: vec![0, 998]
                })
            );
            // Even a refused status spends the proof: it was seen.
            put(&*backend, &k.partner, br#""suspended""#).await;
            let third_key = format!("{prefix}dpop:p3");
            c.proof = Some((&third_key, Duration::from_secs(120)));
            assert!(!backend.gate(&c).await.unwrap().proof_replayed);
            assert!(backend.gate(&c).await.unwrap().proof_replayed);
        }
    }

    #[test]
    fn statuses_allow_only_an_active_unexpired_grant_of_an_active_partner() {
        let grant = active_until("2030-01-01T00:00:01Z");
        let now = at("2030-01-01T00:00:00Z");
        let active = br#""active""#.as_slice();
        assert!(statuses_allow(Some(&grant), Some(active), false, now));
        assert!(!statuses_allow(Some(&grant), Some(active), true, now));
        assert!(!statuses_allow(
            Some(&grant),
            Some(br#""suspended""#),
            false,
            now
        ));
        assert!(!statuses_allow(None, Some(active), false, now));
        assert!(!statuses_allow(Some(&grant), None, false, now));
        assert!(!statuses_allow(
            Some(&grant),
            Some(active),
            false,
            at("2030-01-01T00:00:01Z")
        ));
    }
}
