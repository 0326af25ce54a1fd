#!/usr/bin/env bash
# The hub's memory with a large store, on SQLite and on PostgreSQL: TOTAL
# stored jobs (1,000,000) of which WAITING (100,000) wait, behind a server
# whose one slot never answers, so the hub holds its window and the rest
# wait in the store. Beside it, in the same run, the same hub on an empty
# store. Waiting jobs enter the scheduler's memory a window at a time: the
# RSS should not grow with the store.
#   bench/jobs-memory.sh     (TOTAL=1000000 WAITING=100000 STORES="sqlite postgres")
source "$(dirname "$0")/lib.sh"
TOTAL=${TOTAL:-1000000}
WAITING=${WAITING:-100000}
STORES=${STORES:-sqlite postgres}
PG=${PG:-${DROVER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
SIM_PORT=${SIM_PORT:-19121}
HUB_PORT=${HUB_PORT:-19120}
need curl curl
cargo build --release -q -p drover-store --example fill
FILL=${CARGO_TARGET_DIR:-target}/release/examples/fill
"$DROVER" sim --dialect openai --listen "127.0.0.1:$SIM_PORT" --models m --slots 1 --hang-rate 1 >/dev/null 2>&1 &
PIDS+=($!)
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")

# rss HELD STORE_ARGS...: the hub's jobs held and RSS in MiB once it holds
# HELD jobs (its window).
rss() {
  local want=$1
  shift
  DROVER_LOG=warn "$DROVER" serve --listen 127.0.0.1:$HUB_PORT "$@" \
    --backend openai=http://127.0.0.1:$SIM_PORT,slots=1 >/dev/null 2>&1 &
  local hub=$!
  PIDS+=($hub)
  wait_http "http://127.0.0.1:$HUB_PORT/health"
  local held=0
  for _ in $(seq 300); do
    held=$(metric "http://127.0.0.1:$HUB_PORT" drover_jobs_held)
    [ "${held:-0}" -ge "$want" ] && break
    sleep 0.1
  done
  sleep 1
  local kib
  kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$hub/status")
  kill "$hub"; wait "$hub" 2>/dev/null || true
  echo "$held $((kib / 1024))"
}

printf '%-10s %10s %10s %8s %12s %14s\n' store stored waiting held "RSS MiB" "empty RSS MiB"
for store in $STORES; do
  dir="$WORK/$store"; mkdir -p "$dir/empty"
  if [ "$store" = postgres ]; then
    schema="bench_mem_$$"
    url="$PG?schema=$schema"; empty_url="$PG?schema=${schema}_empty"
    args=(--data-dir "$dir" --database-url "$url"); empty_args=(--data-dir "$dir/empty" --database-url "$empty_url")
  else
    url="sqlite:$dir/drover.db"
    args=(--data-dir "$dir"); empty_args=(--data-dir "$dir/empty")
  fi
  "$FILL" "$url" "$TOTAL" $((TOTAL - WAITING)) >/dev/null
  read -r held mib < <(rss 512 "${args[@]}")
  read -r _ empty < <(rss 0 "${empty_args[@]}")
  if [ "$store" = postgres ] && command -v psql >/dev/null; then
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE; DROP SCHEMA IF EXISTS \"${schema}_empty\" CASCADE" >/dev/null 2>&1 || true
  fi
  printf '%-10s %10s %10s %8s %12s %14s\n' "$store" "$TOTAL" "$WAITING" "$held" "$mib" "$empty"
done
