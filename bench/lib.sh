# Shared by the bench scripts: build once, start processes, clean up on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p drover
DROVER=${CARGO_TARGET_DIR:-target}/release/drover
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

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
