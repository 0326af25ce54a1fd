#!/usr/bin/env bash
# Coding-agent sessions on two real llama-servers (tiny 64k-context model,
# 2 slots and one thread each, so they do not fight over the cores): SESSIONS sessions (default 4) of TURNS turns (default 3),
# each resending a ~20,000-token prompt over /v1/messages, streamed. Runs
# them through drover, then through a client-side round robin, each on
# freshly started servers (cold caches), and prints both reports: later
# turns' time to first token is the figure.
#   bench/agent-sessions.sh
source "$(dirname "$0")/lib.sh"
HUB_PORT=${HUB_PORT:-19300}
PORTS=(19301 19302)
scripts/setup >/dev/null
LLAMA=$(scripts/llama-server)
MODELS=$(scripts/tiny-models)

servers=()
start_servers() {
  servers=()
  for port in "${PORTS[@]}"; do
    "$LLAMA" -m "$MODELS/tiny-64k.gguf" --alias tiny-64k -np 2 -c 131072 -t 1 \
      --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
    servers+=($!)
    PIDS+=($!)
  done
  for port in "${PORTS[@]}"; do wait_http "http://127.0.0.1:$port/health"; done
}
stop_servers() {
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

start_servers
backends=()
for port in "${PORTS[@]}"; do
  backends+=(--backend "llamacpp=http://127.0.0.1:$port,name=llama-$port")
done
DROVER_LOG=warn "$DROVER" serve --data-dir "$(mktemp -d)" --listen 127.0.0.1:$HUB_PORT "${backends[@]}" >/dev/null 2>&1 &
HUB=$!
PIDS+=($HUB)
wait_http http://127.0.0.1:$HUB_PORT/ready
.venv/bin/python bench/agent_sessions.py drover http://127.0.0.1:$HUB_PORT
kill $HUB; wait $HUB 2>/dev/null || true
stop_servers

start_servers
.venv/bin/python bench/agent_sessions.py round-robin http://127.0.0.1:${PORTS[0]} http://127.0.0.1:${PORTS[1]}
