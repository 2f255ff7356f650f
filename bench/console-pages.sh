#!/usr/bin/env bash
# Times the security console's pages against a running gateway whose database was seeded by
# `cargo run --release --example seed_access_log` (README: "The console at 10 million
# records"). Signs in with a console account made by `keyhole admin user add` (its one-time
# password, replaced on first sign-in), then fetches each page 5 times; prints the median.
# The seeder writes records only: register `partner-037` (`keyhole partner add --client-id
# partner-037 …`) for its page to exist.
#   BASE=http://127.0.0.1:18080 EMAIL=sec@harmony.example PASSWORD=<one-time> bench/console-pages.sh
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:18080}
: "${EMAIL:?a console account}" "${PASSWORD:?its one-time password}"
NEW_PASSWORD=${NEW_PASSWORD:-bench-console-password-1}
JAR=$(mktemp) PAGE=$(mktemp)
trap 'rm -f "$JAR" "$PAGE"' EXIT
csrf() { sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p' "$PAGE" | head -n 1; }

curl -sS -c "$JAR" -b "$JAR" -o "$PAGE" "$BASE/console/login"
curl -sS -c "$JAR" -b "$JAR" -o /dev/null --data-urlencode "email=$EMAIL" \
  --data-urlencode "password=$PASSWORD" --data-urlencode "csrf_token=$(csrf)" \
  --data-urlencode "next=/console" "$BASE/console/login"
curl -sS -c "$JAR" -b "$JAR" -o "$PAGE" "$BASE/console/password"
if grep -q 'one-time password' "$PAGE"; then
  curl -sS -c "$JAR" -b "$JAR" -o /dev/null --data-urlencode "csrf_token=$(csrf)" \
    --data-urlencode "password=$NEW_PASSWORD" --data-urlencode "confirm=$NEW_PASSWORD" \
    "$BASE/console/password"
fi

iso() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() {
  local label=$1 path=$2 times=() status
  for _ in 1 2 3 4 5; do
    times+=("$(curl -sS -b "$JAR" -o "$PAGE" -w '%{time_total}' "$BASE$path")")
  done
  status=$(curl -sS -b "$JAR" -o /dev/null -w '%{http_code}' "$BASE$path")
  printf '%-58s %s %8.1f ms\n' "$label" "$status" "$(printf '%s\n' "${times[@]}" | median | awk '{print $1*1000}')"
}

LAST_30D=$(iso '-30 days')
run "overview (charts, alerts, chain state)"            "/console"
run "access-log search, no filter"                      "/console/access-log"
run "search: client_id"                                  "/console/access-log?client_id=partner-037"
run "search: customer_id"                                "/console/access-log?customer_id=CU-318637"
run "search: outcome=denied"                             "/console/access-log?outcome=denied"
run "search: client_id + outcome=denied + last 30 days"  "/console/access-log?client_id=partner-037&outcome=denied&from=$LAST_30D"
run "search: field=claims:claim_number"                  "/console/access-log?field=claims:claim_number"
run "one record"                                         "/console/access-log/5000000"
run "partners"                                           "/console/partners"
run "partner page (charts, grants)"                      "/console/partners/partner-037"
