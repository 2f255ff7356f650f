//! Why Redis can never undo a revocation: every value Keyhole writes to Redis carries the
//! *epoch* it was written under, and a value of another epoch reads as absent.
//!
//! The epoch is one key per deployment (`{prefix}epoch`): 16 random hex digits, a colon, and
//! the `run_id` of the Redis process that holds it. A Redis that comes back with old data — a
//! restart from an older snapshot, a failover to a lagging replica — is a new process with a
//! new `run_id`. Keyhole checks the epoch's `run_id` on every new connection, before the
//! connection carries anything else (see `redis.rs`); a process that holds someone else's
//! epoch gets a new one, and everything written before (cached grant and partner statuses,
//! sessions, codes, pending consents) is a miss from then on. Misses go to the database, which
//! is the authority: the cache can be lost, never outvote it. A `FLUSHALL` takes the epoch
//! with the values, so it is the same case.
//!
//! What is deliberately not stamped: rate-limit cells and counters (a rollback may reset a
//! limit, which costs a burst, never a decision), and revoked-token markers, which only ever
//! refuse (a stale one still names a revoked token; lost ones come back from the database).

/// Lua helpers every stamped script starts with. `KEYS[1]` is always the epoch key. A value
/// that is not fresh is `false`, as Redis gives a missing key to Lua: in a reply array it is a
/// nil element, where a Lua `nil` would cut the array short.
macro_rules! epoch_lua {
    () => {
        r"
local function stamp()
  local e = redis.call('GET', KEYS[1])
  if not e then return nil end
  return string.sub(e, 1, 16)
end
local function fresh(v, s)
  if v and s and string.sub(v, 1, 16) == s then return string.sub(v, 17) end
  return false
end
"
    };
}
pub(super) use epoch_lua;

/// The reply code of a write that found no epoch (after a `FLUSHALL`): the writer makes one
/// (see [`ENSURE_LUA`]) and writes again.
pub(super) const NO_EPOCH: &str = "NOEPOCH";

/// Makes sure the epoch belongs to this Redis process. KEYS[1]: the epoch key; ARGV[1]: 16
/// random hex digits for a new epoch. Returns `{epoch, 1 if it is new}`.
pub(super) const ENSURE_LUA: &str = r"
local rid = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if not rid then return redis.error_reply('ERR no run_id in INFO') end
local e = redis.call('GET', KEYS[1])
if e and string.sub(e, 18) == rid then return {e, 0} end
local new = ARGV[1] .. ':' .. rid
redis.call('SET', KEYS[1], new)
return {new, 1}
";

/// SET with the stamp. KEYS[2]; ARGV: value, ttl ms.
pub(super) const PUT_LUA: &str = concat!(
    epoch_lua!(),
    r"
local s = stamp()
if not s then return redis.error_reply('NOEPOCH shared state has no epoch') end
redis.call('SET', KEYS[2], s .. ARGV[1], 'PX', ARGV[2])
return 1
"
);

/// GET of a fresh value. KEYS[2].
pub(super) const GET_LUA: &str = concat!(
    epoch_lua!(),
    "return fresh(redis.call('GET', KEYS[2]), stamp())\n"
);

/// SET unless a fresh value is there (a stale one counts as absent). Returns 1 when stored.
pub(super) const PUT_IF_ABSENT_LUA: &str = concat!(
    epoch_lua!(),
    r"
local s = stamp()
if not s then return redis.error_reply('NOEPOCH shared state has no epoch') end
if fresh(redis.call('GET', KEYS[2]), s) then return 0 end
redis.call('SET', KEYS[2], s .. ARGV[1], 'PX', ARGV[2])
return 1
"
);

/// Removes a key and returns its value when fresh (a stale one is removed all the same).
pub(super) const TAKE_LUA: &str = concat!(
    epoch_lua!(),
    r"
local v = redis.call('GET', KEYS[2])
if v then redis.call('DEL', KEYS[2]) end
return fresh(v, stamp())
"
);

/// Extends the time to live of a fresh value without writing it, so a request in flight can
/// never bring back what a sign-out deleted. Returns 1 when the value is there.
pub(super) const EXPIRE_EXISTING_LUA: &str = concat!(
    epoch_lua!(),
    r"
if not fresh(redis.call('GET', KEYS[2]), stamp()) then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"
);
