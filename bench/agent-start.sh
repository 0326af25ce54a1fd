#!/usr/bin/env bash
# Time from `drover agent` start to its machine's servers answering through
# the hub: a hub with no backends, two simulated servers on this machine
# (one found on a scanned port, one named with --server), and an agent that
# joins with a fresh token; the clock runs until a chat completion for each
# server's model succeeds through the hub. Beside it, in the same run, the
# same two servers given to a hub in its config (--backend): from the
# hub's start to both models answering. R rounds each, fresh state each.
#   bench/agent-start.sh     (R=10 rounds; H=10s heartbeat)
source "$(dirname "$0")/lib.sh"
R=${R:-10}
H=${H:-10s}
HUB_PORT=${HUB_PORT:-19140}
SIM_A=${SIM_A:-19141}
SIM_B=${SIM_B:-19142}
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")
HUB=http://127.0.0.1:$HUB_PORT

now_ns() { date +%s%N; }

# Until a chat completion for model $1 through the hub answers 200.
until_served() {
  local body="{\"model\":\"$1\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
  for _ in $(seq 2000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$body" "$HUB/v1/chat/completions")" = 200 ] && return 0
    sleep 0.005
  done
  echo "model $1 never answered through the hub" >&2
  return 1
}

"$DROVER" sim --dialect openai --listen "127.0.0.1:$SIM_A" --models model-a >/dev/null 2>&1 &
PIDS+=($!)
"$DROVER" sim --dialect lmstudio --listen "127.0.0.1:$SIM_B" --models model-b --loaded model-b >/dev/null 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SIM_A/v1/models"
wait_http "http://127.0.0.1:$SIM_B/v1/models"

# median of the numbers on standard input
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

agent_ms=()
config_ms=()
for round in $(seq "$R"); do
  # Through an agent: the hub runs already; the clock starts with the agent.
  dir="$WORK/agent-$round"
  mkdir -p "$dir"
  DROVER_LOG=warn DROVER_NODES__HEARTBEAT=$H "$DROVER" serve --data-dir "$dir" --listen "127.0.0.1:$HUB_PORT" >"$dir/hub.log" 2>&1 &
  hub=$!
  PIDS+=($hub)
  wait_http "$HUB/health"
  token=$("$DROVER" nodes token create --hub "$HUB" 2>/dev/null)
  start=$(now_ns)
  "$DROVER" agent --hub "$HUB" --token "$token" --state-dir "$dir/agent" --name bench \
    --scan-port "$SIM_A" --server "http://127.0.0.1:$SIM_B" 2>"$dir/agent.log" &
  agent=$!
  PIDS+=($agent)
  until_served model-a
  until_served model-b
  agent_ms+=($(( ($(now_ns) - start) / 1000000 )))
  kill "$agent" "$hub"
  wait "$agent" "$hub" 2>/dev/null || true

  # From config: the clock starts with the hub.
  dir="$WORK/config-$round"
  mkdir -p "$dir"
  start=$(now_ns)
  DROVER_LOG=warn "$DROVER" serve --data-dir "$dir" --listen "127.0.0.1:$HUB_PORT" \
    --backend "openai=http://127.0.0.1:$SIM_A" --backend "lmstudio=http://127.0.0.1:$SIM_B" >"$dir/hub.log" 2>&1 &
  hub=$!
  PIDS+=($hub)
  until_served model-a
  until_served model-b
  config_ms+=($(( ($(now_ns) - start) / 1000000 )))
  kill "$hub"
  wait "$hub" 2>/dev/null || true
done

a=$(printf '%s\n' "${agent_ms[@]}" | median)
c=$(printf '%s\n' "${config_ms[@]}" | median)
printf '%-34s %10s %8s %8s\n' path "median ms" "min" "max"
printf '%-34s %10s %8s %8s\n' "agent start -> both served" "$a" \
  "$(printf '%s\n' "${agent_ms[@]}" | sort -n | head -1)" "$(printf '%s\n' "${agent_ms[@]}" | sort -n | tail -1)"
printf '%-34s %10s %8s %8s\n' "hub start (--backend) -> served" "$c" \
  "$(printf '%s\n' "${config_ms[@]}" | sort -n | head -1)" "$(printf '%s\n' "${config_ms[@]}" | sort -n | tail -1)"
awk -v a="$a" -v c="$c" 'BEGIN { printf "agent / config: %.2f\n", (c > 0 ? a / c : 0) }'
