# Shared by the bench scripts: build once, start processes, clean up on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# DROVER_BIN measures another build (an older commit's, say) instead.
if [ -z "${DROVER_BIN:-}" ]; then
  cargo build --release -q -p drover
fi
DROVER=${DROVER_BIN:-${CARGO_TARGET_DIR:-target}/release/drover}
PIDS=()
CLEANUP_DIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${CLEANUP_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# need COMMAND PACKAGE: installs a Debian package for a missing command
# (when root), or says what to install.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "bench: please install $2 (apt-get install $2)" >&2
    exit 1
  fi
}

# zero_latency_sim PORT: the backend the overhead benches measure against,
# one model `m`, answering at once with 16 tokens, 1024 slots.
zero_latency_sim() {
  "$DROVER" sim --dialect openai --listen "127.0.0.1:$1" --models m --slots 1024 \
    --ttft-ms 0 --tokens-per-sec 0 --output-tokens 16 >/dev/null 2>&1 &
  PIDS+=($!)
}

# cpu_ticks PID...: user + system CPU ticks of the processes, summed.
cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$total"
}

# wait_http URL: until it answers 200, at most 20 s.
wait_http() {
  for _ in $(seq 200); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# metric HUB NAME: one sample's value from the hub's /metrics.
metric() {
  curl -s "$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
