#!/usr/bin/env bash
# The production row of the load benchmark: two gateway instances behind an nginx round-robin
# balancer, over throwaway PostgreSQL and Redis servers started here on loopback (as .ci/run
# does), against nginx in the same run. Usage: PROXY_WORKERS=1 REPEATS=3 bench/load-production.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PG=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PG" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
data=$(mktemp -d /tmp/keyhole-bench-pg.XXXXXX) redis_dir=$(mktemp -d /tmp/keyhole-bench-redis.XXXXXX)
pg_port=55442 redis_port=56389
chown postgres "$data"
stop() {
  [ -f "$redis_dir/redis.pid" ] && kill "$(cat "$redis_dir/redis.pid")" 2>/dev/null || true
  runuser -u postgres -- "$PG/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$data" "$redis_dir"
}
trap stop EXIT
runuser -u postgres -- "$PG/initdb" -D "$data" -A trust -U postgres >/dev/null
# Durable like production (fsync on): the access log's group commit is what is measured.
runuser -u postgres -- "$PG/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $pg_port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --daemonize yes --pidfile "$redis_dir/redis.pid"
for _ in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done
KH_BENCH_DB="postgres://postgres@127.0.0.1:$pg_port/postgres" \
KH_BENCH_REDIS="redis://127.0.0.1:$redis_port/0" \
KH_BENCH_INSTANCES=2 \
  bench/load.sh
