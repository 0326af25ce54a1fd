#!/usr/bin/env bash
# Several hubs on one PostgreSQL database, in one run, against one
# zero-latency simulated backend:
#   1. a follower's added time per request over the leader's own: the same
#      closed loop (one request at a time) through the leader, then through
#      a follower, whose every request asks the leader for its slot first
#      (the grant's round trip); p50 and p99, and their difference;
#   2. the leader's CPU per request it grants a follower against its CPU
#      per request it proxies itself (C=32 each way; /proc ticks);
#   3. failover: K times, kill -9 the leader of three hubs and time until a
#      survivor leads (lease TTL L), then start the killed one again.
#   bench/cluster.sh      (N=5000 C=32 K=10 L=10s; DATABASE_URL to use
#                          another server than the tests')
source "$(dirname "$0")/lib.sh"
N=${N:-5000}
C=${C:-32}
K=${K:-10}
L=${L:-10s}
BASE=${DATABASE_URL:-${DROVER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
SIM_PORT=${SIM_PORT:-19150}
PORTS=(19151 19152 19153)
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")
SCHEMA="bench_cluster_$(date +%s%N)"
URL="$BASE?schema=$SCHEMA"
[[ "$BASE" == *\?* ]] && URL="$BASE&schema=$SCHEMA"

zero_latency_sim "$SIM_PORT"
wait_http "http://127.0.0.1:$SIM_PORT/v1/models"

HUB_PIDS=()
# start_hub I: hub I on its port and data directory, on the shared schema.
start_hub() {
  local i=$1
  mkdir -p "$WORK/hub$i"
  DROVER_LOG=warn DROVER_CLUSTER__LEASE_TTL=$L DROVER_CLUSTER__RENEW_EVERY=$(python3 -c "import re;s='$L';v=float(re.sub('[a-z]','',s));print(f'{max(v/3.3,0.1):.2f}s')") \
    "$DROVER" serve --data-dir "$WORK/hub$i" --listen "127.0.0.1:${PORTS[$i]}" \
    --database-url "$URL" --backend "openai=http://127.0.0.1:$SIM_PORT,slots=1024" \
    >"$WORK/hub$i.log" 2>&1 &
  HUB_PIDS[$i]=$!
  PIDS+=($!)
}

# role I: what hub I says it is.
role() {
  curl -s "http://127.0.0.1:${PORTS[$1]}/metrics" |
    awk '/^drover_hub_role\{/ && $2 == 1 { sub(/.*role="/, ""); sub(/".*/, ""); print }'
}

# leader: the index of the hub that leads, once one does and the others
# have linked.
leader() {
  for _ in $(seq 2000); do
    local lead="" linked=0 i
    for i in 0 1 2; do
      [ -n "${HUB_PIDS[$i]:-}" ] || continue
      case "$(role "$i")" in
        leader) lead=$i ;;
        follower) [ "$(metric "http://127.0.0.1:${PORTS[$i]}" drover_hub_linked)" = 1 ] && linked=$((linked + 1)) ;;
      esac
    done
    if [ -n "$lead" ] && [ "$linked" -ge "$1" ]; then
      echo "$lead"
      return 0
    fi
    sleep 0.01
  done
  echo "no leader" >&2
  return 1
}

start_hub 0
wait_http "http://127.0.0.1:${PORTS[0]}/ready"
start_hub 1
wait_http "http://127.0.0.1:${PORTS[1]}/ready"
LEAD=$(leader 1)
FOLLOW=$((1 - LEAD))
LEAD_URL=http://127.0.0.1:${PORTS[$LEAD]}
FOLLOW_URL=http://127.0.0.1:${PORTS[$FOLLOW]}

# load NAME URL CONCURRENCY: one closed loop, its JSON report, and the
# leader's CPU ticks over it.
load() {
  local before after
  before=$(cpu_ticks "${HUB_PIDS[$LEAD]}")
  "$DROVER" bench --url "$2" --model m --concurrency "$3" --requests "$N" --warmup 500 \
    --json | sed -n '/^\[/,$p' >"$WORK/$1.json"
  after=$(cpu_ticks "${HUB_PIDS[$LEAD]}")
  echo "$1 $((after - before))" >>"$WORK/cpu"
}
load leader1 "$LEAD_URL" 1
load follower1 "$FOLLOW_URL" 1
load proxied "$LEAD_URL" "$C"
load granted "$FOLLOW_URL" "$C"

# Failover: three hubs (K=0 leaves it out).
: >"$WORK/failover"
if [ "$K" -gt 0 ]; then
  start_hub 2
  wait_http "http://127.0.0.1:${PORTS[2]}/ready"
fi
for k in $(seq "$K"); do
  LEAD=$(leader 2)
  start=$(date +%s%N)
  kill -9 "${HUB_PIDS[$LEAD]}"
  wait "${HUB_PIDS[$LEAD]}" 2>/dev/null || true
  HUB_PIDS[$LEAD]=""
  leader 1 >/dev/null
  echo $((($(date +%s%N) - start) / 1000000)) >>"$WORK/failover"
  start_hub "$LEAD"
  wait_http "http://127.0.0.1:${PORTS[$LEAD]}/ready"
done

python3 - "$WORK" "$N" "$C" "$L" <<'PY'
import json, statistics, sys
d, n, c, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cpu = dict(l.split() for l in open(f"{d}/cpu"))
r = {k: json.load(open(f"{d}/{k}.json"))[0] for k in ("leader1", "follower1", "proxied", "granted")}
print("one request at a time (ms):")
print(f"{'through':<10} {'p50':>8} {'p99':>8} {'req/s':>8} {'errors':>7}")
for k, name in (("leader1", "leader"), ("follower1", "follower")):
    x = r[k]
    print(f"{name:<10} {x['latency_ms']['p50']:>8.3f} {x['latency_ms']['p99']:>8.3f} {x['requests_per_sec']:>8.0f} {x['errors']:>7}")
added = (r["follower1"]["latency_ms"]["p50"] - r["leader1"]["latency_ms"]["p50"]) * 1000
print(f"a follower's added time per request, p50: {added:.0f} us (aim <= 200 us)")
hz = 100
per = {k: int(cpu[k]) / hz * 1e6 / n for k in ("proxied", "granted")}
print(f"\nC={c}: the leader's CPU per request it proxies itself: {per['proxied']:.1f} us "
      f"({r['proxied']['requests_per_sec']:.0f} req/s, {r['proxied']['errors']} errors)")
print(f"C={c}: the leader's CPU per request it grants a follower: {per['granted']:.1f} us "
      f"({r['granted']['requests_per_sec']:.0f} req/s, {r['granted']['errors']} errors)")
print(f"granted / proxied: {per['granted'] / max(per['proxied'], 1e-9):.2f} (aim <= 0.33)")
f = [int(x) for x in open(f"{d}/failover")]
if f:
    print(f"\nfailover, lease TTL {ttl}, {len(f)} kill -9s of the leader: median {statistics.median(f)} ms, "
          f"max {max(f)} ms (from the kill to a survivor leading with the other linked)")
PY
