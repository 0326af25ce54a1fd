#!/usr/bin/env bash
# What an open dashboard costs the hub, in one run, against one zero-latency
# simulated backend:
#   idle        the hub's CPU over IDLE seconds with no dashboard, then with
#               WATCHERS dashboards reading /admin/events;
#   under load  `drover bench` (N requests, C at once) with no dashboard and
#               with WATCHERS open, alternated ROUNDS times.
# A dashboard's whole cost to the hub is its event stream (the page itself
# is static), so the watchers are `curl -N` on /admin/events: the same
# bytes a browser reads, without a browser's own CPU on these two cores.
# Prints the hub's CPU as a share of one core and per request. Timings on
# two busy cores move a few percent from run to run, more than a dashboard
# costs; so last, under valgrind's callgrind, the exact instructions a
# second one open dashboard adds to an idle hub (after a load, so the
# traffic history is not empty).
#   bench/dashboard.sh     (N=20000 C=32 WATCHERS=1 ROUNDS=3 IDLE=20 to change it)
source "$(dirname "$0")/lib.sh"
N=${N:-20000}
C=${C:-32}
WATCHERS=${WATCHERS:-1}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-20}
SIM_PORT=${SIM_PORT:-19111}
HUB_PORT=${HUB_PORT:-19110}
HUB=http://127.0.0.1:$HUB_PORT

zero_latency_sim "$SIM_PORT"
DATA=$(mktemp -d)
CLEANUP_DIRS+=("$DATA")
DROVER_LOG=warn "$DROVER" serve --data-dir "$DATA" --listen 127.0.0.1:$HUB_PORT \
  --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>&1 &
HUB_PID=$!
PIDS+=($HUB_PID)
wait_http http://127.0.0.1:$SIM_PORT/v1/models
wait_http $HUB/ready

WATCH_PIDS=()
open_dashboards() {
  for _ in $(seq "$WATCHERS"); do
    curl -sN "$HUB/admin/events" >/dev/null &
    WATCH_PIDS+=($!)
    PIDS+=($!)
  done
  # Each gets its first event (the whole hour) before anything is measured.
  sleep 2
}
close_dashboards() {
  for p in "${WATCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  WATCH_PIDS=()
  sleep 1
}

OUT=$(mktemp -d)
CLEANUP_DIRS+=("$OUT")
# idle NAME: the hub's CPU ticks over IDLE seconds.
idle() {
  local before after
  before=$(cpu_ticks "$HUB_PID")
  sleep "$IDLE"
  after=$(cpu_ticks "$HUB_PID")
  echo "$1 $((after - before)) $IDLE" >>"$OUT/idle"
}
# load NAME: one bench run; the hub's CPU ticks and the wall seconds.
load() {
  local before after start end
  before=$(cpu_ticks "$HUB_PID")
  start=$(date +%s.%N)
  "$DROVER" bench --url "$HUB" --model m --concurrency "$C" --requests "$N" --warmup 500 \
    --json >/dev/null
  end=$(date +%s.%N)
  after=$(cpu_ticks "$HUB_PID")
  echo "$1 $((after - before)) $(echo "$end - $start" | bc -l)" >>"$OUT/load"
}
need bc bc

idle without
open_dashboards
idle with
close_dashboards
for _ in $(seq "$ROUNDS"); do
  load without
  open_dashboards
  load with
  close_dashboards
done

# The exact count: the hub again, under callgrind.
kill "$HUB_PID"
wait "$HUB_PID" 2>/dev/null || true
need valgrind valgrind
DROVER_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
  "$DROVER" serve --data-dir "$DATA" --listen 127.0.0.1:$HUB_PORT \
  --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>&1 &
HUB_PID=$!
PIDS+=($HUB_PID)
for _ in $(seq 600); do
  curl -sf -o /dev/null $HUB/ready && break
  sleep 0.1
done
"$DROVER" bench --url "$HUB" --model m --concurrency 8 --requests 3000 --warmup 0 >/dev/null
counted() {
  callgrind_control -z "$HUB_PID" >/dev/null
  sleep "$IDLE"
  callgrind_control -d "$HUB_PID" >/dev/null
  ls -t "$OUT"/cg.*.* | head -1
}
echo "without $(awk '/^summary:/ { print $2 }' "$(counted)") $IDLE" >>"$OUT/instructions"
open_dashboards
echo "with $(awk '/^summary:/ { print $2 }' "$(counted)") $IDLE" >>"$OUT/instructions"
close_dashboards

python3 - "$OUT" "$N" "$WATCHERS" <<'PY'
import statistics, sys
d, n, watchers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hz = 100  # USER_HZ
rows = lambda f: [l.split() for l in open(f"{d}/{f}")]
idle = {name: int(t) / hz / float(s) for name, t, s in rows("idle")}
print(f"idle hub, share of one core: without {100 * idle['without']:.2f}%   "
      f"with {watchers} dashboard(s) {100 * idle['with']:.2f}%   "
      f"difference {100 * (idle['with'] - idle['without']):.2f}%")
load = {"without": [], "with": []}
for name, t, s in rows("load"):
    load[name].append((int(t) / hz, float(s)))
print(f"\nunder load ({n} requests a run), hub CPU per run:")
for name in ("without", "with"):
    runs = "  ".join(f"{cpu:.2f} s in {wall:.1f} s" for cpu, wall in load[name])
    print(f"  {name:<8} {runs}")
med = {k: statistics.median(cpu for cpu, _ in v) for k, v in load.items()}
wall = statistics.median(w for _, w in load["with"])
print(f"\nmedian CPU per request: without {med['without'] * 1e6 / n:.1f} us, "
      f"with {med['with'] * 1e6 / n:.1f} us (with / without {med['with'] / med['without']:.3f})")
print(f"the dashboard's share of one core under load: "
      f"{100 * (med['with'] - med['without']) / wall:.2f}%")
ins = {name: int(i) / float(s) for name, i, s in rows("instructions")}
print(f"\nidle hub under callgrind, instructions a second: without {ins['without']:,.0f}, "
      f"with {watchers} dashboard(s) {ins['with']:,.0f}: the dashboard adds "
      f"{ins['with'] - ins['without']:,.0f} a second")
PY
