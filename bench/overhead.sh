#!/usr/bin/env bash
# Hub overhead: the same closed-loop load through drover and directly
# against one zero-latency simulated backend, in one run; prints requests/s,
# latency percentiles, the ratio, and the hub's CPU time per request.
#   bench/overhead.sh [--stream]     (N=20000 C=32 to change the load)
source "$(dirname "$0")/lib.sh"
N=${N:-20000}
C=${C:-32}
SIM_PORT=${SIM_PORT:-19101}
HUB_PORT=${HUB_PORT:-19100}
"$DROVER" sim --dialect openai --listen 127.0.0.1:$SIM_PORT --models m --slots 1024 \
  --ttft-ms 0 --tokens-per-sec 0 --output-tokens 16 >/dev/null 2>&1 &
PIDS+=($!)
DROVER_LOG=warn "$DROVER" serve --listen 127.0.0.1:$HUB_PORT \
  --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:$SIM_PORT/v1/models
wait_http http://127.0.0.1:$HUB_PORT/ready
"$DROVER" bench --url http://127.0.0.1:$HUB_PORT --direct http://127.0.0.1:$SIM_PORT \
  --model m --concurrency "$C" --requests "$N" --warmup 1000 "$@"
