#!/usr/bin/env bash
# Many node agents heartbeating one hub, on SQLite and on PostgreSQL: A
# simulated agents (crates/drover-bench/examples/agents.rs) join with one
# reusable token, then each heartbeats every H ms for S seconds; the hub's
# CPU over those seconds (as a share of one core) and its RSS at the end.
# Beside them, one real `drover agent`'s RSS while it heartbeats.
# Aims (issue 25): hub under 5% of a core and 100 MB with 1,000 agents at
# 10 s; the agent under 20 MB.
#   bench/agents.sh          (A=1000 agents; H=10000 ms; S=60 s;
#                             STORES="sqlite postgres";
#                             PG=postgres://postgres@127.0.0.1:5432/test)
source "$(dirname "$0")/lib.sh"
A=${A:-1000}
H=${H:-10000}
S=${S:-60}
STORES=${STORES:-sqlite postgres}
PG=${PG:-${DROVER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
HUB_PORT=${HUB_PORT:-19130}
cargo build --release -q -p drover-bench --example agents
AGENTS=${CARGO_TARGET_DIR:-target}/release/examples/agents
HZ=$(getconf CLK_TCK)

WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")

rss_mib() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

printf '%-9s %6s %12s %13s %13s %12s %12s\n' store agents "beats/s" "hub CPU %" "hub RSS MiB" "beat p50 ms" "beat p99 ms"
for store in $STORES; do
  dir="$WORK/$store"
  mkdir -p "$dir"
  db_args=()
  if [ "$store" = postgres ]; then
    schema="bench_agents_$$"
    db_args=(--database-url "$PG?schema=$schema")
  fi
  DROVER_LOG=warn DROVER_NODES__HEARTBEAT="${H}ms" "$DROVER" serve --data-dir "$dir" "${db_args[@]}" \
    --listen 127.0.0.1:$HUB_PORT >"$dir/hub.log" 2>&1 &
  hub=$!
  PIDS+=($hub)
  wait_http "http://127.0.0.1:$HUB_PORT/health"
  token=$("$DROVER" nodes token create --reusable --ttl 1h --hub "http://127.0.0.1:$HUB_PORT" 2>/dev/null)
  nice "$AGENTS" --hub "http://127.0.0.1:$HUB_PORT" --token "$token" --agents "$A" \
    --heartbeat-ms "$H" --seconds "$S" >"$dir/out" 2>"$dir/err" &
  bench=$!
  # CPU is counted from once every agent has joined: heartbeats only.
  for _ in $(seq 600); do
    grep -q '^agents ' "$dir/out" 2>/dev/null && break
    sleep 0.1
  done
  before=$(cpu_ticks "$hub")
  start=$(date +%s.%N)
  wait "$bench" || { echo "bench on $store failed:" >&2; cat "$dir/err" "$dir/hub.log" >&2; exit 1; }
  after=$(cpu_ticks "$hub")
  end=$(date +%s.%N)
  rss=$(rss_mib "$hub")
  if [ "$store" = sqlite ]; then
    # One real agent beside them, its RSS after a few heartbeats.
    agent_token=$("$DROVER" nodes token create --hub "http://127.0.0.1:$HUB_PORT" 2>/dev/null)
    "$DROVER" agent --hub "http://127.0.0.1:$HUB_PORT" --token "$agent_token" \
      --state-dir "$dir/agent-state" 2>"$dir/agent.log" &
    agent=$!
    PIDS+=($agent)
    sleep 3
    agent_rss=$(rss_mib "$agent")
    kill "$agent"; wait "$agent" 2>/dev/null || true
  fi
  kill "$hub"; wait "$hub" 2>/dev/null || true
  if [ "$store" = postgres ] && command -v psql >/dev/null; then
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null 2>&1 || true
  fi
  o="$dir/out"
  cpu=$(awk -v t="$((after - before))" -v hz="$HZ" -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", 100 * t / hz / (e - s) }')
  printf '%-9s %6s %12s %13s %13s %12s %12s\n' "$store" "$(awk '$1 == "agents" { print $2 }' "$o")" \
    "$(awk '$1 == "heartbeats_per_s" { print $2 }' "$o")" "$cpu" "$rss" \
    "$(awk '$1 == "heartbeat_p50_ms" { print $2 }' "$o")" "$(awk '$1 == "heartbeat_p99_ms" { print $2 }' "$o")"
  refused=$(awk '$1 == "refused" { print $2 }' "$o")
  [ "${refused:-0}" = 0 ] || echo "  $store: $refused heartbeats refused or failed" >&2
done
echo
echo "one drover agent: RSS ${agent_rss:-?} MiB"
