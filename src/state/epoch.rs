//! Why Redis can never undo a revocation: every value Keyhole writes to Redis carries the
//! *epoch* it was written under, and a value of another epoch reads as absent.
//!
//! The epoch is one key per deployment (`{prefix}epoch`): 16 random hex digits, then the
//! identity of the data it was made for — the Redis process's `run_id` and its replication id
//! (`master_replid`). A Redis that comes back with old data is a new process (a restart from an
//! older snapshot, a failover to a lagging replica), or the same process with a new replication
//! history (demoted, fully resynchronised from a lagging replica, promoted again). Keyhole
//! checks the epoch's identity on every new connection, before the connection carries anything
//! else (see `redis.rs`); a connection that meets a replica (`READONLY`), a loading server or a
//! broken link is dropped, so the check runs again once the server is a primary. A Redis that
//! holds someone else's epoch gets a new one, and everything written before (cached grant and
//! partner statuses, sessions, codes, pending consents) is a miss from then on. Misses go to
//! the database, which is the authority: the cache can be lost, never outvote it. A `FLUSHALL`
//! takes the epoch with the values, so it is the same case.
//!
//! Every script carries a shebang, so Redis 7 refuses it on a replica before it runs: a
//! demoted primary's old data is never read. A cache fill names the epoch it saw *before* it
//! read the database, and is refused if the epoch changed meanwhile: an answer read before a
//! revocation must not land in an epoch that no longer holds the revocation.
//!
//! Not covered: an administrator loading old data into the same process by hand (`DEBUG
//! RELOAD NOSAVE`, `SWAPDB`, `RESTORE`); the debug command is off by default in Redis 7.
//!
//! What is deliberately not stamped: rate-limit cells and counters (a rollback may reset a
//! limit, which costs a burst, never a decision), and revoked-token markers, which only ever
//! refuse (a stale one still names a revoked token; lost ones come back from the database).

/// Lua helpers every stamped script starts with. `KEYS[1]` is always the epoch key. A value
/// that is not fresh is `false`, as Redis gives a missing key to Lua: in a reply array it is a
/// nil element, where a Lua `nil` would cut the array short.
macro_rules! epoch_lua {
    () => {
        r"#!lua
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

/// Makes sure the epoch belongs to this Redis process and its replication history. KEYS[1]:
/// the epoch key; ARGV[1]: 16 random hex digits for a new epoch. Returns `{epoch, 1 if new}`.
pub(super) const ENSURE_LUA: &str = r"#!lua
local rid = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
if not rid or not replid then return redis.error_reply('ERR no run_id or master_replid in INFO') end
local identity = rid .. ':' .. replid
local e = redis.call('GET', KEYS[1])
if e and string.sub(e, 18) == identity then return {e, 0} end
local new = ARGV[1] .. ':' .. identity
redis.call('SET', KEYS[1], new)
return {new, 1}
";

/// The epoch's stamp now (nil without one). KEYS[1].
pub(super) const STAMP_LUA: &str = concat!(epoch_lua!(), "return stamp() or false\n");

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

/// SET unless a fresh value is there (a stale one counts as absent), and only while the epoch
/// is still ARGV[3] (the one seen before the database was read; empty: any). Returns 1 when
/// stored, 0 when a fresh value is there, -1 when the epoch changed.
pub(super) const PUT_IF_ABSENT_LUA: &str = concat!(
    epoch_lua!(),
    r"
local s = stamp()
if not s then return redis.error_reply('NOEPOCH shared state has no epoch') end
if ARGV[3] ~= '' and ARGV[3] ~= s then return -1 end
if fresh(redis.call('GET', KEYS[2]), s) then return 0 end
redis.call('SET', KEYS[2], s .. ARGV[1], 'PX', ARGV[2])
return 1
"
);

/// SET with the stamp, for KEYS[2..] with (value, ttl ms) pairs in ARGV: one round trip.
pub(super) const PUT_MANY_LUA: &str = concat!(
    epoch_lua!(),
    r"
local s = stamp()
if not s then return redis.error_reply('NOEPOCH shared state has no epoch') end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], s .. ARGV[2 * i - 3], 'PX', ARGV[2 * i - 2])
end
return #KEYS - 1
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
