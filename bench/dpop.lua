-- wrk script for the DPoP row of bench/load.sh: every request carries
-- `Authorization: DPoP <token>` and a proof of its own, never one sent before.
--
-- Usage: wrk -tTHREADS ... -s bench/dpop.lua URL -- TOKEN_FILE PROOF_FILE THREADS
--   PROOF_FILE holds one proof per line (examples/dpop_proofs.rs). Each wrk thread loads
--   it once, at init, and keeps the lines that are its own (line i goes to thread i mod
--   THREADS), so no two threads share a proof. THREADS must be wrk's -t: a thread's init
--   runs before the next thread exists, so it cannot count them itself. A thread that runs out stops (it does not wrap
--   around: a replayed proof would measure refusals) and done() reports it; bench/load.sh
--   then flags the row.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- Globals, so that done() can read them through thread:get().
proofs, next_proof, proofs_loaded, exhausted = {}, 1, 0, 0

function init(args)
  local token_file, proof_file, n = args[1], args[2], tonumber(args[3])
  if not token_file or not proof_file or not n then
    error("usage: wrk -tTHREADS ... -s dpop.lua URL -- TOKEN_FILE PROOF_FILE THREADS")
  end
  local f = assert(io.open(token_file, "r"))
  local token = f:read("*l")
  f:close()
  local mine, line = id, 0
  for proof in io.lines(proof_file) do
    if line % n == mine then proofs[#proofs + 1] = proof end
    line = line + 1
  end
  wrk.headers["Authorization"] = "DPoP " .. token
  proofs_loaded = #proofs
end

function request()
  local proof = proofs[next_proof]
  if proof == nil then
    -- Out of proofs: stop this thread rather than send one twice. The request returned
    -- here carries no proof; if it still goes out it is refused and counts as non-2xx.
    exhausted = 1
    wrk.headers["DPoP"] = nil
    wrk.thread:stop()
    return wrk.format()
  end
  proofs[next_proof] = nil
  next_proof = next_proof + 1
  wrk.headers["DPoP"] = proof
  return wrk.format()
end

function done(summary, latency, requests)
  local ran_out, loaded, used = 0, 0, 0
  for _, t in ipairs(threads) do
    ran_out = ran_out + (t:get("exhausted") or 0)
    loaded = loaded + (t:get("proofs_loaded") or 0)
    used = used + (t:get("next_proof") or 1) - 1
  end
  io.write(string.format("dpop proofs: %d loaded, %d taken, threads that ran out: %d\n",
    loaded, used, ran_out))
  if ran_out > 0 then
    io.write("DPOP PROOFS EXHAUSTED: the run stopped early; make more proofs\n")
  end
end
