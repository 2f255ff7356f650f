#!/usr/bin/env bash
# A short perf profile of the partner hot path (issue 12): one gateway worker on SQLite with
# the built-in sample upstream, a token from the real consent flow, `wrk -t1 -c32` for
# DURATION seconds while `perf record -g` samples the gateway. Prints req/s, the gateway's CPU
# per request (user+system from /proc, so µs/req needs no guessing) and the top symbols.
# Not a baseline run: the machine is shared and the figures are for comparing before/after.
# Usage: bench/profile-hotpath.sh [path/to/keyhole] > bench/profile-hotpath-<label>.txt
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/keyhole}
duration=${DURATION:-10}
work=$(mktemp -d /tmp/keyhole-profile.XXXXXX)
port=${KH_PROFILE_PORT:-18190} up=${KH_PROFILE_UPSTREAM:-18191}
base="http://127.0.0.1:$port"
export KEYHOLE_DATABASE_URL="sqlite://$work/p.db?mode=rwc" KEYHOLE_LISTEN="127.0.0.1:$port"
export KEYHOLE_PUBLIC_URL="$base" KEYHOLE_UPSTREAM__BASE_URL="http://127.0.0.1:$up"
export KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE="$work/checkpoint.key" RUST_LOG=warn KEYHOLE_WORKERS=1
export KEYHOLE_ACCESS_LOG__JOURNAL_DIR="$work/journal"
cleanup() { for p in ${gw_pid:-} ${up_pid:-}; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$bin" sample-upstream --listen "127.0.0.1:$up" >"$work/upstream.log" 2>&1 & up_pid=$!
"$bin" migrate >/dev/null
partner=$("$bin" partner add --name "Profile Partner" --redirect-uri "http://127.0.0.1:9/cb" \
  --fields claims:status,claims:status_updated_at --rate 1000000 --burst 1000000 \
  --grant-rate 1000000 --grant-burst 1000000 --json)
client_id=$(jq -r .client_id <<<"$partner") secret=$(jq -r .client_secret <<<"$partner")
"$bin" customer add --id CU-1001 --email p@example.com --password profile-password-1 --json >/dev/null
"$bin" serve >"$work/gateway.log" 2>&1 & gw_pid=$!
for _ in $(seq 50); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
token=$(bench/consent-flow.sh "$base" "$client_id" "$secret" "http://127.0.0.1:9/cb" \
  p@example.com profile-password-1 "claims:status claims:status_updated_at" | jq -r .access_token)
url="$base/partner/v1/claims/C-1001"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url")" = 200 ]
wrk -t1 -c32 -d2s -H "Authorization: Bearer $token" "$url" >/dev/null   # warm-up
ticks() { awk '{print $14 + $15}' "/proc/$gw_pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
perf record -F 999 -g -p "$gw_pid" -o "$work/perf.data" -- sleep "$duration" 2>/dev/null &
perf_pid=$!
out=$(wrk -t1 -c32 -d"${duration}s" -H "Authorization: Bearer $token" "$url")
wait "$perf_pid" || true
t1=$(ticks)
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; $bin; wrk -t1 -c32 -d${duration}s; 1 worker, SQLite"
echo "$out"
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
echo "gateway CPU: $(( (t1 - t0) * 1000000 / hz )) µs over ${duration}s"
awk -v t=$((t1 - t0)) -v hz="$hz" -v rps="$rps" -v d="$duration" \
  'BEGIN { printf "gateway CPU per request: %.1f µs\n", t / hz * 1e6 / (rps * d) }'
# Self time only: release builds carry no frame pointers, so call chains are unreliable.
report() {
  perf report -i "$work/perf.data" --no-children --stdio "$@" 2>/dev/null \
    | grep -E '^ +[0-9]' | sed -E 's/ {2,}/  /g; s/ +-  -.*$//' | head -n "$lines" || true
}
echo "## where the samples are (by thread)"
lines=8 report --sort comm
echo "## where the samples are (by object)"
lines=8 report --sort dso
echo "## top symbols (self)"
lines=45 report --sort dso,symbol
