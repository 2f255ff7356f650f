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
#        KH_BENCH_DPOP=1 bench/load.sh   (then also: the gateway with a Bearer token and with a
#          DPoP-bound token and a fresh proof per request, REPEATS rounds alternating, same
#          THREADS/CONNS/DURATION/WARMUP; proofs made just before each run by
#          examples/dpop_proofs.rs, KH_BENCH_DPOP_RATE (15000) per second of run; bench/dpop.lua)
#        KH_BENCH_BUILD=debug bench/load.sh   (a debug build: to check the tooling, not for figures)
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
profile=${KH_BENCH_BUILD:-release}
case $profile in release) build=(--release) ;; debug) build=() ;; *) echo "KH_BENCH_BUILD: release or debug" >&2; exit 2 ;; esac
[ "${KH_BENCH_DPOP:-}" = 1 ] && build+=(--bins --example dpop_proofs)
cargo build "${build[@]}" --quiet
bin=$root/target/$profile/keyhole

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

[ "${KH_BENCH_DPOP:-}" = 1 ] || exit 0

# ---- DPoP rows: the same partner path with a bound token and a fresh proof per request ----
# wrk directly (run-baselines.sh sends one static header; a proof may be used only once), with
# the baselines' THREADS/CONNS/DURATION/WARMUP/REPEATS. Bearer and DPoP alternate per round;
# each run gets a freshly refreshed token, and each DPoP run proofs made just before it.
THREADS=${THREADS:-1} CONNS=${CONNS:-32} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-3}
rate=${KH_BENCH_DPOP_RATE:-15000}
proofs_bin=$root/target/$profile/examples/dpop_proofs
seed="keyhole-bench-$$-$RANDOM"
url="$base/partner/v1/claims/C-1001"
token_proof() { "$proofs_bin" --seed "$seed" token --htu "$base/oauth/token"; }
echo "DPoP key thumbprint: $("$proofs_bin" --seed "$seed" thumbprint)"

# A second grant (same partner and customer) whose tokens are bound to the key.
bench/consent-flow.sh "$base" "$client_id" "$secret" "http://127.0.0.1:9/cb" \
  bench@example.com bench-password-1 "claims:status claims:status_updated_at" "$(token_proof)" \
  >"$work/dpop-token.json"
[ "$(jq -r .token_type "$work/dpop-token.json")" = DPoP ] ||
  { echo "the token endpoint did not bind the token: $(jq -c 'del(.access_token, .refresh_token)' "$work/dpop-token.json")" >&2; exit 1; }
jq -r .refresh_token "$work/dpop-token.json" >"$work/dpop-refresh"
dpop_refresh() { # rotates the bound refresh token (with a proof); the access token to $work/dpop-access
  local answer
  answer=$(curl -sf -u "$client_id:$secret" -H "DPoP: $(token_proof)" -d grant_type=refresh_token \
    --data-urlencode "refresh_token=$(cat "$work/dpop-refresh")" "$base/oauth/token")
  jq -r .refresh_token <<<"$answer" >"$work/dpop-refresh"
  jq -r .access_token <<<"$answer" >"$work/dpop-access"
}
make_proofs() { # FILE COUNT
  "$proofs_bin" --seed "$seed" resource --htu "$url" --access-token-file "$work/dpop-access" \
    --count "$2" >"$1"
}
dpop_refresh
make_proofs "$work/check-proof" 1
check=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: DPoP $(cat "$work/dpop-access")" \
  -H "DPoP: $(cat "$work/check-proof")" "$url")
[ "$check" = 200 ] || { echo "gateway answered $check to a DPoP call before the benchmark" >&2; exit 1; }

proc_ticks() { # utime+stime (all threads) summed over pids
  local f=() p; for p in "$@"; do [ -r "/proc/$p/stat" ] && f+=("/proc/$p/stat"); done
  [ ${#f[@]} -gt 0 ] || { echo 0; return; }
  awk '{sub(/^.*\) /,""); t+=$12+$13} END{print t+0}' "${f[@]}"
}
sys_ticks() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }

out=$work/dpop-rows; mkdir -p "$out"; : >"$out/runs.tsv"
# run_row LABEL ROUND WRK-ARGS… : one measured run, CPU of the gateway(s) sampled over its
# middle as run-baselines.sh does; appends label, round, req/s, p50, p99, non2xx, errors,
# µs/req, flag to runs.tsv.
run_row() {
  local label=$1 round=$2; shift 2
  local raw="$out/$label-r$round.txt" g0 g1 s0 s1
  timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency --timeout 5s "$@" >"$raw" 2>&1 &
  local wrk_pid=$!
  sleep 1
  g0=$(proc_ticks $pids); s0=$(sys_ticks)
  sleep $((DURATION > 4 ? DURATION - 3 : 1))
  g1=$(proc_ticks $pids); s1=$(sys_ticks)
  wait $wrk_pid || echo "wrk exited $? for $label (see $raw)" >&2
  awk -v L="$label" -v R="$round" -v N="$(nproc)" -v cg=$((g1 - g0)) -v win=$((s1 - s0)) '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; return v*1000 }
    /^ +50% / { p50 = ms($2) } /^ +99% / { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { gsub(/[^0-9 ]/, ""); err = $1 + $2 + $3 + $4 }
    /DPOP PROOFS EXHAUSTED/ { flag = "proofs-ran-out" }
    END {
      w = win / N; us = (w > 0 && rps > 0) ? sprintf("%.1f", 1e6 * cg / w / rps) : "-"
      if (rps == "") { rps = 0; flag = "no-result" }
      if (bad + err > 0) flag = flag (flag ? "," : "") "non-2xx/errors"
      printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%d\t%d\t%s\t%s\n", L, R, rps, p50, p99, bad, err, us, (flag ? flag : "ok")
    }' "$raw" >>"$out/runs.tsv"
  tail -n1 "$out/runs.tsv" | awk -F'\t' '{printf "[dpop] r%s %-16s %8s req/s  p50 %s ms  p99 %s ms  non2xx %s err %s  %s µs/req  %s\n",$2,$1,$3,$4,$5,$6,$7,$8,$9}' >&2
}

for ((round = 1; round <= REPEATS; round++)); do
  hdr=$("$work/header.sh")
  ((WARMUP > 0)) && { timeout $((WARMUP + 10)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -H "$hdr" "$url" >/dev/null 2>&1 || true; }
  run_row gateway-bearer "$round" -H "$hdr" "$url"

  dpop_refresh
  # Warm-up proofs first, so the measured run's are the freshest (iat within the server's
  # 60 s window: keep WARMUP + DURATION + the time to make them well below it).
  t0=$(date +%s.%N)
  ((WARMUP > 0)) && make_proofs "$out/proofs-warmup" $((rate * WARMUP))
  make_proofs "$out/proofs-run" $((rate * DURATION))
  echo "[dpop] $((rate * (WARMUP + DURATION))) proofs made in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2
  if ((WARMUP > 0)); then
    timeout $((WARMUP + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s bench/dpop.lua "$url" \
      -- "$work/dpop-access" "$out/proofs-warmup" "$THREADS" >"$out/warmup-r$round.txt" 2>&1 || true
  fi
  run_row gateway-dpop "$round" -s bench/dpop.lua "$url" -- "$work/dpop-access" "$out/proofs-run" "$THREADS"
  rm -f "$out/proofs-warmup" "$out/proofs-run"
done

echo
echo "Bearer vs DPoP, gateway full partner path: wrk -t$THREADS -c$CONNS -d${DURATION}s, median of $REPEATS rounds (raw: $out)"
awk -F'\t' '
  function med(k, i,   m, j, x, y, t, a) {
    m = cnt[k]; for (j = 1; j <= m; j++) a[j] = v[k, i, j]
    if (a[1] == "-") return "-"
    for (x = 2; x <= m; x++) for (y = x; y > 1 && a[y-1]+0 > a[y]+0; y--) { t = a[y]; a[y] = a[y-1]; a[y-1] = t }
    return a[int((m + 1) / 2)]
  }
  !($1 in seen) { seen[$1] = ++n; name[n] = $1 }
  { k = seen[$1]; c = ++cnt[k]; for (i = 3; i <= 8; i++) v[k, i, c] = $i
    bad[k] += $6 + $7; if ($9 != "ok") flag[k] = flag[k] " r" $2 ":" $9 }
  BEGIN { printf "%-16s %8s %7s %7s %7s %7s  %s\n", "target", "req/s", "p50ms", "p99ms", "non2xx", "us/req", "flag" }
  END { for (k = 1; k <= n; k++)
    printf "%-16s %8s %7s %7s %7s %7s  %s\n", name[k], med(k,3), med(k,4), med(k,5), bad[k], med(k,8),
      flag[k] ? "FLAGGED:" flag[k] : "ok" }
' "$out/runs.tsv" | tee "$out/summary.txt"
echo "us/req: CPU-microseconds per request of the gateway process(es); non2xx: summed over rounds (non-2xx + socket errors)"
if awk -F'\t' '$9 != "ok" { bad = 1 } END { exit !bad }' "$out/runs.tsv"; then
  echo "WARNING: flagged rows measured refusals or ran short, not the partner path"
fi
