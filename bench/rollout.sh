#!/usr/bin/env bash
# A roll-out across N local agents: N copies of this release build run
# `drover agent` against one hub; a second release build of another
# version is published and rolled out B nodes at a time. Reports the
# publish time, the roll-out's time end to end, per node (its time over
# the batches it took), and beside it, in the same run, one download of the
# build from the hub, the transfer every node's update includes.
#   bench/rollout.sh        (N=10 agents; B=5 per batch)
source "$(dirname "$0")/lib.sh"
N=${N:-10}
B=${B:-5}
HUB_PORT=${HUB_PORT:-19150}
HUB=http://127.0.0.1:$HUB_PORT
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")
NEXT_VERSION=0.1.0+bench
T=${CARGO_TARGET_DIR:-target}

# The other build: the same code as another version.
DROVER_BUILD_VERSION=$NEXT_VERSION cargo build --release -q -p drover
cp "$T/release/drover" "$WORK/drover-next"
cargo build --release -q -p drover
"$WORK/drover-next" --version | grep -q "$NEXT_VERSION"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

DROVER_LOG=warn DROVER_NODES__HEARTBEAT=1s "$DROVER" serve --data-dir "$WORK/hub" --listen "127.0.0.1:$HUB_PORT" >"$WORK/hub.log" 2>&1 &
PIDS+=($!)
wait_http "$HUB/health"
token=$("$DROVER" nodes token create --reusable --hub "$HUB" 2>/dev/null)
for i in $(seq "$N"); do
  mkdir -p "$WORK/node$i/bin"
  cp "$DROVER" "$WORK/node$i/bin/drover"
  "$WORK/node$i/bin/drover" agent --hub "$HUB" --token "$token" --name "node$i" \
    --state-dir "$WORK/node$i/state" --no-scan 2>"$WORK/node$i/agent.log" &
  PIDS+=($!)
done
for _ in $(seq 300); do
  up=$("$DROVER" nodes ls --json --hub "$HUB" | python3 -c 'import json,sys; print(sum(n["up"] for n in json.load(sys.stdin)["nodes"]))')
  [ "$up" = "$N" ] && break
  sleep 0.1
done
[ "$up" = "$N" ] || { echo "only $up of $N agents joined" >&2; exit 1; }

start=$(now_ms)
"$DROVER" release publish "$WORK/drover-next" --version "$NEXT_VERSION" --hub "$HUB" >/dev/null
publish=$(( $(now_ms) - start ))
size=$(stat -c %s "$WORK/drover-next")

start=$(now_ms)
"$DROVER" nodes update --version "$NEXT_VERSION" --batch "$B" --hub "$HUB" >"$WORK/rollout.out" 2>&1 \
  || { cat "$WORK/rollout.out" >&2; exit 1; }
rollout=$(( $(now_ms) - start ))
on=$("$DROVER" nodes ls --json --hub "$HUB" | python3 -c "import json,sys; print(sum(n['version'] == '$NEXT_VERSION' and n['up'] for n in json.load(sys.stdin)['nodes']))")

# Beside it: one download of the same build from the hub, as an agent
# makes it (node1's credential), the transfer every update includes.
node_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["node_id"])' "$WORK/node1/state/node.json")
cred=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["credential"])' "$WORK/node1/state/node.json")
start=$(now_ms)
curl -sf -o /dev/null -H "authorization: Bearer $cred" "$HUB/v1/nodes/$node_id/releases/$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$NEXT_VERSION")"
download=$(( $(now_ms) - start ))

batches=$(( (N + B - 1) / B ))
printf '%-38s %s\n' "build" "$size bytes ($NEXT_VERSION)"
printf '%-38s %s ms\n' "publish (upload, hash, store)" "$publish"
printf '%-38s %s ms, %s of %s nodes on %s\n' "roll-out, $N nodes, $B a batch" "$rollout" "$on" "$N" "$NEXT_VERSION"
printf '%-38s %s ms\n' "per batch" "$(( rollout / batches ))"
printf '%-38s %s ms\n' "one download of the build" "$download"
awk -v b="$(( rollout / batches ))" -v d="$download" 'BEGIN { printf "batch / download: %.1f\n", (d > 0 ? b / d : 0) }'
