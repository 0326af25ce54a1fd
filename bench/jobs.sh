#!/usr/bin/env bash
# Jobs per second end to end, on SQLite and on PostgreSQL, in one run: a
# batch of N lines (uploaded, checked, stored as N jobs, claimed a window at
# a time, forwarded to a zero-latency simulated server, answered, stored,
# written to the output file) from create to `completed`; beside it the
# store's own limit, pgbench-style insert-and-update transactions on the
# same database (crates/drover-store/examples/write_rate.rs), and the ratio.
#   bench/jobs.sh            (N=20000 lines; STORES="sqlite postgres";
#                             PG=postgres://postgres@127.0.0.1:5432/test)
source "$(dirname "$0")/lib.sh"
N=${N:-20000}
STORES=${STORES:-sqlite postgres}
PG=${PG:-${DROVER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
SIM_PORT=${SIM_PORT:-19111}
HUB_PORT=${HUB_PORT:-19110}
need jq jq
need bc bc
cargo build --release -q -p drover-store --example write_rate
RATE=${CARGO_TARGET_DIR:-target}/release/examples/write_rate

zero_latency_sim "$SIM_PORT"
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "{\"custom_id\":\"r%d\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q%d\"}]}}\n", i, i }' >"$WORK/in.jsonl"

printf '%-10s %10s %12s %14s %10s\n' store lines "jobs/s" "store tx/s" ratio
for store in $STORES; do
  dir="$WORK/$store"
  mkdir -p "$dir"
  db_args=()
  if [ "$store" = postgres ]; then
    schema="bench_jobs_$$"
    db_args=(--database-url "$PG?schema=$schema")
    base_url="$PG?schema=${schema}_base"
  else
    base_url="sqlite:$dir/write_rate.db"
  fi
  DROVER_LOG=warn "$DROVER" serve --data-dir "$dir" "${db_args[@]}" --listen 127.0.0.1:$HUB_PORT \
    --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >"$dir/hub.log" 2>&1 &
  hub=$!
  PIDS+=($hub)
  wait_http "http://127.0.0.1:$HUB_PORT/health"
  start=$(date +%s.%N)
  file=$(curl -s "http://127.0.0.1:$HUB_PORT/v1/files" -F purpose=batch -F "file=@$WORK/in.jsonl" | jq -r .id)
  batch=$(curl -s "http://127.0.0.1:$HUB_PORT/v1/batches" -H 'content-type: application/json' \
    -d "{\"input_file_id\":\"$file\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}" | jq -r .id)
  # Polled without jq, whose start-up alone took a tenth of the machine's
  # CPU at 20 looks a second, away from the hub and its database.
  while :; do
    case $(curl -s "http://127.0.0.1:$HUB_PORT/v1/batches/$batch") in
      *'"status":"completed"'* | *'"status":"failed"'* | *'"status":"expired"'* | *'"status":"cancelled"'*) break ;;
    esac
    sleep 0.05
  done
  end=$(date +%s.%N)
  ended=$(curl -s "http://127.0.0.1:$HUB_PORT/v1/batches/$batch")
  completed=$(echo "$ended" | jq -r .request_counts.completed)
  status=$(echo "$ended" | jq -r .status)
  kill "$hub"; wait "$hub" 2>/dev/null || true
  jobs_per_s=$(echo "$completed / ($end - $start)" | bc -l)
  base=$("$RATE" "$base_url" 5 8)
  if [ "$store" = postgres ] && command -v psql >/dev/null; then
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE; DROP SCHEMA IF EXISTS \"${schema}_base\" CASCADE" >/dev/null 2>&1 || true
  fi
  printf '%-10s %10s %12.0f %14s %10.2f   (%s)\n' "$store" "$completed" "$jobs_per_s" "$base" \
    "$(echo "$jobs_per_s / $base" | bc -l)" "$status"
done
