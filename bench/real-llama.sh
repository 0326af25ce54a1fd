#!/usr/bin/env bash
# Through drover against direct, in one run, to the real llama.cpp server
# (scripts/llama-server) with a tiny real model (scripts/tiny-models): the
# same closed-loop load on each, streamed; prints drover bench's report,
# whose ratio lines compare throughput and time to first byte.
#   bench/real-llama.sh            (N=300 C=4 SLOTS=4 to change the load)
source "$(dirname "$0")/lib.sh"
N=${N:-300}
C=${C:-4}
SLOTS=${SLOTS:-4}
LLAMA_PORT=${LLAMA_PORT:-19201}
HUB_PORT=${HUB_PORT:-19200}
scripts/setup >/dev/null
LLAMA=$(scripts/llama-server)
MODELS=$(scripts/tiny-models)

"$LLAMA" -m "$MODELS/tiny-a.gguf" -np "$SLOTS" -c $((SLOTS * 2048)) \
  --host 127.0.0.1 --port $LLAMA_PORT >/dev/null 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:$LLAMA_PORT/health
DROVER_LOG=warn "$DROVER" serve --data-dir "$(mktemp -d)" --listen 127.0.0.1:$HUB_PORT \
  --backend "llamacpp=http://127.0.0.1:$LLAMA_PORT,name=llama" >/dev/null 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:$HUB_PORT/ready

"$DROVER" bench --url http://127.0.0.1:$HUB_PORT --direct http://127.0.0.1:$LLAMA_PORT \
  --concurrency "$C" --requests "$N" --warmup 20 --stream --max-tokens 16
