#!/usr/bin/env bash
# Hub memory with N requests (default 10,000) waiting in its queue: one
# backend slot held for an hour, N clients connected and waiting; prints the
# hub's resident memory before and with the queue full.
source "$(dirname "$0")/lib.sh"
N=${N:-10000}
SIM_PORT=${SIM_PORT:-19111}
HUB_PORT=${HUB_PORT:-19110}
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((N + 1000)) ]; then
  echo "queue-memory: need $((N + 1000)) file descriptors, have $(ulimit -n)" >&2
  exit 1
fi
"$DROVER" sim --dialect openai --listen 127.0.0.1:$SIM_PORT --models m --slots 1 \
  --ttft-ms 3600000 >/dev/null 2>&1 &
PIDS+=($!)
DROVER_LOG=warn DROVER_QUEUE__MAX_WAITING=$((N + 10)) DROVER_QUEUE__TIMEOUT=3600s \
  ${HUB_WRAP:-} "$DROVER" serve --data-dir "$(mktemp -d)" --listen 127.0.0.1:$HUB_PORT --backend openai=http://127.0.0.1:$SIM_PORT,slots=1 \
  >/dev/null 2>&1 &
PIDS+=($!)
HUB=http://127.0.0.1:$HUB_PORT
wait_http http://127.0.0.1:$SIM_PORT/v1/models
wait_http $HUB/ready
before=$(metric $HUB process_resident_memory_bytes)
"$DROVER" bench --url $HUB --model m --concurrency $((N + 1)) --requests $((N + 1)) \
  --warmup 0 --timeout 3600 >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1200); do
  depth=$(metric $HUB 'drover_queue_depth{model="m"}')
  [ "${depth:-0}" -ge "$N" ] && break
  sleep 0.25
done
sleep 1
depth=$(metric $HUB 'drover_queue_depth{model="m"}')
after=$(metric $HUB process_resident_memory_bytes)
awk -v b="$before" -v a="$after" -v d="$depth" 'BEGIN {
  printf "waiting requests: %d\nhub RSS idle:     %.1f MB\nhub RSS waiting:  %.1f MB\nper waiting request: %.1f KB\n",
    d, b/1e6, a/1e6, (a-b)/d/1024 }'
