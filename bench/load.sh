#!/usr/bin/env bash
# Load benchmark of the whole partner path (token check, grant check, rate limits, upstream
# call, projection, durable hash-chained log) against nginx on this machine, in one run.
#
# It starts the fixed nginx upstream of ../shared/bench/run-baselines.sh (a ~400-byte claim of
# customer CU-2001), registers a partner with limits far above the load, walks the real consent
# flow with curl to get a token, starts `keyhole serve` (release build) and lets
# run-baselines.sh measure nginx's proxy rows and the gateway in the same run. Tokens are
# refreshed (rotating the refresh token) before every gateway run.
#
# Usage: bench/load.sh            (env: DURATION, REPEATS, PROXY_WORKERS as run-baselines.sh)
#        KH_BENCH_DB=postgres://… KH_BENCH_REDIS=redis://… KH_BENCH_INSTANCES=2 \
#          bench/load.sh   (production row: two instances behind an nginx round-robin balancer;
#          bench/load-production.sh starts throwaway PostgreSQL and Redis servers for it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
baselines=${BASELINES:-$root/../shared/bench/run-baselines.sh}
work=$(mktemp -d /tmp/keyhole-bench.XXXXXX)
port=${KH_BENCH_PORT:-18090}
instances=${KH_BENCH_INSTANCES:-1}
# With two instances, everything goes through a balancer on port+2, which is also the issuer.
if [ "$instances" = 2 ]; then base="http://127.0.0.1:$((port + 2))"; else base="http://127.0.0.1:$port"; fi
export KEYHOLE_DATABASE_URL=${KH_BENCH_DB:-"sqlite://$work/bench.db?mode=rwc"}
[ -n "${KH_BENCH_REDIS:-}" ] && export KEYHOLE_REDIS_URL=$KH_BENCH_REDIS
export KEYHOLE_LISTEN="127.0.0.1:$port" KEYHOLE_PUBLIC_URL="$base"
export KEYHOLE_UPSTREAM__BASE_URL="http://127.0.0.1:18081"
# The checkpoint key goes with the throwaway data, not into the working directory; both
# instances share it, as every instance of one deployment must.
export KEYHOLE_ACCESS_LOG__CHECKPOINT_KEY_FILE="$work/checkpoint.key"
# The key that seals the token-signing keys, shared by both instances (required on PostgreSQL).
export KEYHOLE_KEYS__ENCRYPTION_KEY_FILE="$work/keys.key"
# Each instance its own journal (durability = "journal", the default; KH_BENCH_DURABILITY=database
# measures the commit-before-answer mode).
export KEYHOLE_ACCESS_LOG__JOURNAL_DIR="$work/journal-1"
export KEYHOLE_ACCESS_LOG__DURABILITY=${KH_BENCH_DURABILITY:-journal}
# A private metrics listener per instance: the import lag is sampled during the run.
export KEYHOLE_METRICS_LISTEN="127.0.0.1:$((port + 10))"
export RUST_LOG=${RUST_LOG:-warn}
# One HTTP worker: on this 2-core machine wrk and the nginx upstream take the other core, and a
# second worker only adds context switches (measured: 25 % more CPU per call).
export KEYHOLE_WORKERS=${KEYHOLE_WORKERS:-1}

command -v jq >/dev/null && command -v openssl >/dev/null || {
  apt-get update -qq && apt-get install -y -qq jq openssl >/dev/null; }
cargo build --release --quiet
bin=$root/target/release/keyhole

cleanup() {
  [ -n "${gw_pid:-}" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  [ -n "${gw2_pid:-}" ] && kill "$gw2_pid" 2>/dev/null && wait "$gw2_pid" 2>/dev/null
  [ -f "$work/lb/nginx.pid" ] && kill "$(cat "$work/lb/nginx.pid")" 2>/dev/null
  "$baselines" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$baselines" up
"$bin" migrate >/dev/null
partner=$("$bin" partner add --name "Bench Partner" --redirect-uri "http://127.0.0.1:9/cb" \
  --fields claims:status,claims:status_updated_at --rate 1000000 --burst 1000000 \
  --grant-rate 1000000 --grant-burst 1000000 --json)
client_id=$(jq -r .client_id <<<"$partner") secret=$(jq -r .client_secret <<<"$partner")
"$bin" customer add --id CU-2001 --email bench@example.com --password bench-password-1 --json >/dev/null

"$bin" serve >"$work/gateway.log" 2>&1 &
gw_pid=$!
pids=$gw_pid
if [ "$instances" = 2 ]; then
  KEYHOLE_LISTEN="127.0.0.1:$((port + 1))" KEYHOLE_ACCESS_LOG__JOURNAL_DIR="$work/journal-2" \
    KEYHOLE_METRICS_LISTEN="127.0.0.1:$((port + 11))" \
    "$bin" serve >"$work/gateway2.log" 2>&1 &
  gw2_pid=$!
  mkdir -p "$work/lb/logs"
  cat >"$work/lb/nginx.conf" <<LB
worker_processes 1;
pid $work/lb/nginx.pid;
error_log $work/lb/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream keyhole { server 127.0.0.1:$port; server 127.0.0.1:$((port + 1)); keepalive 64; }
  server {
    listen 127.0.0.1:$((port + 2));
    location / {
      proxy_pass http://keyhole;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
LB
  nginx -p "$work/lb" -c "$work/lb/nginx.conf"
  sleep 0.5
  pids="$gw_pid $gw2_pid $(cat "$work/lb/nginx.pid") $(pgrep -P "$(cat "$work/lb/nginx.pid")" | tr '\n' ' ')"
fi
for _ in $(seq 50); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

bench/consent-flow.sh "$base" "$client_id" "$secret" "http://127.0.0.1:9/cb" \
  bench@example.com bench-password-1 "claims:status claims:status_updated_at" >"$work/token.json"
jq -r .refresh_token "$work/token.json" >"$work/refresh"
check=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(jq -r .access_token "$work/token.json")" \
  "$base/partner/v1/claims/C-1001")
[ "$check" = 200 ] || { echo "gateway answered $check before the benchmark" >&2; exit 1; }

cat >"$work/header.sh" <<HDR
#!/usr/bin/env bash
set -euo pipefail
answer=\$(curl -sf -u '$client_id:$secret' -d grant_type=refresh_token \
  --data-urlencode "refresh_token=\$(cat '$work/refresh')" '$base/oauth/token')
jq -r .refresh_token <<<"\$answer" >'$work/refresh'
echo "Authorization: Bearer \$(jq -r .access_token <<<"\$answer")"
HDR
chmod +x "$work/header.sh"

# How far the database trails the journal during the run (records, and seconds since the
# importer last held everything then durable), sampled every 200 ms on instance 1.
( while sleep 0.2; do
    curl -s "http://127.0.0.1:$((port + 10))/metrics" |
      sed -n 's/^keyhole_access_log_import_lag_\(records\|seconds\) //p' | paste -sd' '
  done ) >"$work/lag.txt" 2>/dev/null &
sampler=$!
GATEWAY_URL="$base/partner/v1/claims/C-1001" GATEWAY_HEADER_CMD="$work/header.sh" \
  GATEWAY_PID=$pids "$baselines" run
kill $sampler 2>/dev/null || true
sort -k2 -g "$work/lag.txt" | tail -n 1 | awk '{print "import lag, worst sample: " $1 " records, " $2 " s"}'
metrics=$(curl -s "http://127.0.0.1:$((port + 10))/metrics")
grep -E '^keyhole_access_log_(batch_size_bucket|batches_total|commit_seconds)' <<<"$metrics" || true
