#!/usr/bin/env bash
# Times the security team's access-log queries against a running gateway whose database was
# seeded by `cargo run --release --example seed_access_log` (README: "Access-log queries at
# 10 million records"). Each query runs 5 times; the median wall time is printed.
#   BASE=http://127.0.0.1:18080 TOKEN=kh_adm_… bench/log-queries.sh
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:18080}
: "${TOKEN:?an admin token}"
iso() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }
SIX_MONTHS=$(iso '-182 days')
SIX_MONTHS_1H=$(iso '-182 days +1 hour')
SIX_MONTHS_1D=$(iso '-181 days')
LAST_30D=$(iso '-30 days')
GRANT=00000000-0000-4000-8000-0000000c7dcd

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run() {
  local label=$1 query=$2 accept=${3:-application/json}
  local times=() rows
  for _ in 1 2 3 4 5; do
    times+=("$(curl -sS -o /tmp/kh-q.out -w '%{time_total}' -H "Authorization: Bearer $TOKEN" -H "Accept: $accept" "$BASE/admin/v1/access-log$query")")
  done
  if [ "$accept" = text/csv ]; then rows=$(($(wc -l </tmp/kh-q.out) - 1)); else rows=$(python3 -c 'import json;print(len(json.load(open("/tmp/kh-q.out"))["items"]))'); fi
  printf '%-58s %6s rows  %8.1f ms\n' "$label" "$rows" "$(printf '%s\n' "${times[@]}" | median | awk '{print $1*1000}')"
}

run "newest 100, no filter"                         "?limit=100"
run "client_id"                                      "?client_id=partner-037&limit=100"
run "customer_id"                                    "?customer_id=CU-318637&limit=100"
run "grant_id"                                       "?grant_id=$GRANT&limit=100"
run "outcome=denied (3 %)"                           "?outcome=denied&limit=100"
run "outcome=invalid_token (0.5 %)"                  "?outcome=invalid_token&limit=100"
run "field=claims:claim_number"                      "?field=claims:claim_number&limit=100"
run "from/to: one hour six months ago"               "?from=$SIX_MONTHS&to=$SIX_MONTHS_1H&limit=100"
run "client_id + one day six months ago"             "?client_id=partner-037&from=$SIX_MONTHS&to=$SIX_MONTHS_1D&limit=100"
run "customer_id + field"                            "?customer_id=CU-318637&field=claims:status&limit=100"
run "client_id + outcome=denied + last 30 days"      "?client_id=partner-037&outcome=denied&from=$LAST_30D&limit=100"
run "client_id + field + outcome=ok, 1000 per page"  "?client_id=partner-037&field=claims:status&outcome=ok&limit=1000"
run "client_id, deep page (cursor at id 5 000 000)"  "?client_id=partner-037&limit=100&cursor=$(printf 'before:5000000' | base64 | tr '+/' '-_' | tr -d '=')"
run "CSV: client_id, one day"                        "?client_id=partner-037&from=$SIX_MONTHS&to=$SIX_MONTHS_1D" text/csv
run "CSV: client_id, last 30 days"                   "?client_id=partner-037&from=$LAST_30D" text/csv
