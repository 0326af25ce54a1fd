#!/usr/bin/env bash
# What a backend listing many models costs the hub: the time of GET
# /v1/queue and GET /admin/overview, the hub's CPU while it only probes, and
# a chat request's latency alone and while a client polls /v1/queue (the
# issue's case: 0.7 ms alone, 0.5-1.5 s polled at 10,000 models), for a
# backend listing 100, 1,000 and 10,000 models (the cap raised past them).
# Work that grows linearly shows as 10x from 1,000 to 10,000 models;
# quadratic work as 100x. Prints one row per size and the ratios.
#
# usage: bench/many-models.sh        (DROVER_BIN=... for another build;
#                                     UNCAPPED=1 for one before the cap)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIM_PORT=18611
HUB_PORT=18610
HUB=http://127.0.0.1:$HUB_PORT

# median_ms URL [N]: the median of N (default 15) GETs, in milliseconds.
median_ms() {
  local url=$1 n=${2:-15}
  for _ in $(seq "$n"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$url"
  done | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] * 1000 }'
}

# chat_ms: the median of 15 chat requests' latency, in milliseconds.
chat_ms() {
  for _ in $(seq 15); do
    curl -s -o /dev/null -w '%{time_total}\n' "$HUB/v1/chat/completions" \
      -H 'content-type: application/json' \
      -d '{"model":"m00000","messages":[{"role":"user","content":"hi"}]}'
  done | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] * 1000 }'
}

declare -A QUEUE OVERVIEW CPU CHAT ALONE
printf '%8s %12s %15s %16s %14s %18s\n' models "queue ms" "overview ms" "probe cpu %" "chat ms alone" "chat ms (polled)"
for n in 100 1000 10000; do
  models=$(seq -f 'm%05g' 0 $((n - 1)) | paste -sd, -)
  "$DROVER" sim --dialect openai --listen "127.0.0.1:$SIM_PORT" --models "$models" --slots 64 \
    --ttft-ms 0 --tokens-per-sec 0 --output-tokens 8 >/dev/null 2>&1 &
  sim=$!
  PIDS+=("$sim")
  data=$(mktemp -d)
  CLEANUP_DIRS+=("$data")
  # A build before limits.max_models_per_backend has no cap to raise.
  cap=()
  [ -n "${UNCAPPED:-}" ] || cap=(env DROVER_LIMITS__MAX_MODELS_PER_BACKEND=20000)
  DROVER_HEALTH__PROBE_INTERVAL=1s "${cap[@]}" \
    "$DROVER" serve --listen "127.0.0.1:$HUB_PORT" --data-dir "$data" \
    --backend "http://127.0.0.1:$SIM_PORT,name=big" >/dev/null 2>&1 &
  hub=$!
  PIDS+=("$hub")
  wait_http "$HUB/v1/models/m00000"
  QUEUE[$n]=$(median_ms "$HUB/v1/queue")
  OVERVIEW[$n]=$(median_ms "$HUB/admin/overview")
  # Probing alone, once a second, for 5 s.
  before=$(cpu_ticks "$hub")
  sleep 5
  ticks=$(($(cpu_ticks "$hub") - before))
  CPU[$n]=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz / 5 * 100 }')
  ALONE[$n]=$(chat_ms)
  # A client polling the queue while chat requests go through.
  (while kill -0 "$hub" 2>/dev/null; do curl -s -o /dev/null "$HUB/v1/queue"; done) &
  poller=$!
  CHAT[$n]=$(chat_ms)
  kill "$poller" 2>/dev/null || true
  wait "$poller" 2>/dev/null || true
  printf '%8d %12s %15s %16s %14s %18s\n' "$n" "${QUEUE[$n]}" "${OVERVIEW[$n]}" "${CPU[$n]}" "${ALONE[$n]}" "${CHAT[$n]}"
  kill "$hub" "$sim" 2>/dev/null || true
  wait "$hub" "$sim" 2>/dev/null || true
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
echo
echo "10k/1k: queue $(ratio "${QUEUE[10000]}" "${QUEUE[1000]}")x," \
  "overview $(ratio "${OVERVIEW[10000]}" "${OVERVIEW[1000]}")x," \
  "probe cpu $(ratio "${CPU[10000]}" "${CPU[1000]}")x (linear: 10x)"
echo "10k: a chat request polled / alone: $(ratio "${CHAT[10000]}" "${ALONE[10000]}")x"
