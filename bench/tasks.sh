#!/usr/bin/env bash
# Capability workers, on SQLite and on PostgreSQL, in one run
# (crates/drover-bench/examples/tasks.rs against a fresh hub for each):
# - tasks per second through W no-op workers (one slot each, answering at
#   once): N tasks submitted by K clients at once, from the first submit to
#   the store counting the last one completed; beside it the store's own
#   limit, pgbench-style insert-and-update transactions on the same database
#   (crates/drover-store/examples/write_rate.rs), and the ratio;
# - a task's time from the start of its submit to a parked worker's poll
#   answer carrying it, one task at a time, p50 and p99, beside a GET
#   /health round trip to the same hub in the same run.
#   bench/tasks.sh           (N=5000 tasks; W=10 workers; K=8 submitters;
#                             M=500 latency samples; STORES="sqlite postgres";
#                             PG=postgres://postgres@127.0.0.1:5432/test)
source "$(dirname "$0")/lib.sh"
N=${N:-5000}
W=${W:-10}
K=${K:-8}
M=${M:-500}
STORES=${STORES:-sqlite postgres}
PG=${PG:-${DROVER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
HUB_PORT=${HUB_PORT:-19120}
cargo build --release -q -p drover-store --example write_rate
cargo build --release -q -p drover-bench --example tasks
RATE=${CARGO_TARGET_DIR:-target}/release/examples/write_rate
TASKS=${CARGO_TARGET_DIR:-target}/release/examples/tasks

WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")

# field FILE NAME: the value of a `NAME value` line the bench printed.
field() {
  awk -v n="$2" '$1 == n { print $2 }' "$1"
}

printf '%-9s %6s %9s %11s %7s   %s\n' "" "" "" "" "" "submit->worker ms   /health ms"
printf '%-9s %6s %9s %11s %7s   %8s %8s   %7s %7s\n' store tasks "tasks/s" "store tx/s" ratio p50 p99 p50 p99
details=()
for store in $STORES; do
  dir="$WORK/$store"
  mkdir -p "$dir"
  db_args=()
  if [ "$store" = postgres ]; then
    schema="bench_tasks_$$"
    db_args=(--database-url "$PG?schema=$schema")
    base_url="$PG?schema=${schema}_base"
  else
    base_url="sqlite:$dir/write_rate.db"
  fi
  DROVER_LOG=warn nice "$DROVER" serve --data-dir "$dir" "${db_args[@]}" \
    --listen 127.0.0.1:$HUB_PORT >"$dir/hub.log" 2>&1 &
  hub=$!
  PIDS+=($hub)
  wait_http "http://127.0.0.1:$HUB_PORT/health"
  nice "$TASKS" --hub "http://127.0.0.1:$HUB_PORT" --workers "$W" --tasks "$N" \
    --submitters "$K" --latency-samples "$M" >"$dir/out" 2>"$dir/err" || {
    echo "bench on $store failed:" >&2
    cat "$dir/err" "$dir/hub.log" >&2
    exit 1
  }
  kill "$hub"; wait "$hub" 2>/dev/null || true
  base=$(nice "$RATE" "$base_url" 5 8)
  if [ "$store" = postgres ] && command -v psql >/dev/null; then
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE; DROP SCHEMA IF EXISTS \"${schema}_base\" CASCADE" >/dev/null 2>&1 || true
  fi
  o="$dir/out"
  rate=$(field "$o" tasks_per_s)
  printf '%-9s %6s %9.0f %11s %7.2f   %8s %8s   %7s %7s\n' "$store" "$(field "$o" tasks)" "$rate" "$base" \
    "$(awk -v a="$rate" -v b="$base" 'BEGIN { print a / b }')" \
    "$(field "$o" submit_to_worker_p50_ms)" "$(field "$o" submit_to_worker_p99_ms)" \
    "$(field "$o" health_p50_ms)" "$(field "$o" health_p99_ms)"
  details+=("$(printf '%-9s submit->worker p50 = %s x /health p50, max %s ms; POST /v1/tasks answered p50 %s p99 %s ms; a worker had the task before that answer %s of %s times' \
    "$store" "$(field "$o" submit_to_worker_over_health_p50)" "$(field "$o" submit_to_worker_max_ms)" \
    "$(field "$o" submit_answer_p50_ms)" "$(field "$o" submit_answer_p99_ms)" \
    "$(field "$o" received_before_submit_answered)" "$(field "$o" latency_samples)")")
  details+=("$(printf '%-9s throughput: hub CPU %s us/task; all submitted at %s s, every complete answered at %s s, all stored completed at %s s' \
    "" "$(field "$o" hub_cpu_us_per_task)" "$(field "$o" tasks_submitted_s)" \
    "$(field "$o" tasks_workers_done_s)" "$(field "$o" tasks_seconds)")")
done
echo
printf '%s\n' "${details[@]}"
