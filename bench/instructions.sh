#!/usr/bin/env bash
# The hub's instructions per request, counted by valgrind's callgrind: the
# same for the same binary and load whatever else the machine does, so two
# builds compare exactly where timings on two busy cores do not.
#   bench/instructions.sh [OTHER_DROVER_BINARY]
# With a second binary (an older commit's build, say), both are measured in
# the same run and the ratio printed. N=2000 C=8 to change the load;
# STREAM=1 for streamed answers.
source "$(dirname "$0")/lib.sh"
N=${N:-2000}
C=${C:-8}
SIM_PORT=${SIM_PORT:-19121}
HUB_PORT=${HUB_PORT:-19120}
need valgrind valgrind

zero_latency_sim "$SIM_PORT"
wait_http http://127.0.0.1:$SIM_PORT/v1/models
OUT=$(mktemp -d)
CLEANUP_DIRS+=("$OUT")

# count NAME BINARY: instructions the hub ran for the load, per request.
count() {
  local name=$1 binary=$2 pid
  DROVER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.%p" \
    "$binary" serve --data-dir "$(mktemp -d)" --listen 127.0.0.1:$HUB_PORT \
    --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>"$OUT/$name.log" &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 600); do
    curl -sf -o /dev/null http://127.0.0.1:$HUB_PORT/ready && break
    sleep 0.1
  done
  # Warm up, then count only the load itself.
  "$DROVER" bench --url http://127.0.0.1:$HUB_PORT --model m --concurrency "$C" --requests 200 \
    --warmup 0 ${STREAM:+--stream} >/dev/null
  callgrind_control -z "$pid" >/dev/null
  "$DROVER" bench --url http://127.0.0.1:$HUB_PORT --model m --concurrency "$C" --requests "$N" \
    --warmup 0 ${STREAM:+--stream} >/dev/null
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump taken after the load (the largest part number).
  local dump
  dump=$(ls -t "$OUT/$name".*.* | head -1)
  echo "$name $(awk '/^summary:/ { print $2 }' "$dump")" >>"$OUT/counts"
}

count this "$DROVER"
if [ $# -gt 0 ]; then
  count other "$1"
fi
python3 - "$OUT/counts" "$N" <<'PY'
import sys
counts = dict(l.split() for l in open(sys.argv[1]))
n = int(sys.argv[2])
for name, ir in counts.items():
    print(f"{name:<6} {int(ir) / n:>12,.0f} instructions per request")
if "other" in counts:
    print(f"this / other: {int(counts['this']) / int(counts['other']):.3f}")
PY
