#!/usr/bin/env bash
# Interactive traffic beside a large batch, in one run: the same closed-loop
# interactive load (drover bench, C clients) against a fleet with 8 slots,
# first alone, then while a batch of LINES lines runs on the same model at
# the jobs' default priority. Prints each run's latency percentiles (drover
# bench's report; time to first byte holds the queue wait) and the ratio of
# the p95s. The aim: within 10%.
#   bench/jobs-interactive.sh     (LINES=50000 C=4 N=2000)
source "$(dirname "$0")/lib.sh"
LINES=${LINES:-50000}
C=${C:-4}
N=${N:-2000}
SIM_PORT=${SIM_PORT:-19131}
HUB_PORT=${HUB_PORT:-19130}
need jq jq
"$DROVER" sim --dialect openai --listen "127.0.0.1:$SIM_PORT" --models m --slots 8 \
  --ttft-ms 20 --tokens-per-sec 0 --output-tokens 16 >/dev/null 2>&1 &
PIDS+=($!)
WORK=$(mktemp -d)
CLEANUP_DIRS+=("$WORK")
DROVER_LOG=warn "$DROVER" serve --data-dir "$WORK" --listen 127.0.0.1:$HUB_PORT \
  --backend openai=http://127.0.0.1:$SIM_PORT,slots=8 >"$WORK/hub.log" 2>&1 &
PIDS+=($!)
HUB=http://127.0.0.1:$HUB_PORT
wait_http "$HUB/health"

interactive() {
  "$DROVER" bench --url "$HUB" --model m --concurrency "$C" --requests "$N" --warmup 50 --json \
    | sed -n '/^\[/,$p' | jq '.[0]'
}

alone=$(interactive)
awk -v n="$LINES" 'BEGIN { for (i = 0; i < n; i++) printf "{\"custom_id\":\"r%d\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q%d\"}]}}\n", i, i }' >"$WORK/in.jsonl"
file=$(curl -s "$HUB/v1/files" -F purpose=batch -F "file=@$WORK/in.jsonl" | jq -r .id)
batch=$(curl -s "$HUB/v1/batches" -H 'content-type: application/json' \
  -d "{\"input_file_id\":\"$file\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}" | jq -r .id)
# Once the batch fills the fleet.
for _ in $(seq 100); do
  [ "$(curl -s "$HUB/v1/batches/$batch" | jq -r .request_counts.completed)" -gt 100 ] && break
  sleep 0.1
done
beside=$(interactive)
progress=$(curl -s "$HUB/v1/batches/$batch" | jq -c .request_counts)
echo "alone:        $(echo "$alone" | jq -c '{p50_ms: .latency_ms.p50, p95_ms: .latency_ms.p95, rps: .requests_per_sec}')"
echo "beside batch: $(echo "$beside" | jq -c '{p50_ms: .latency_ms.p50, p95_ms: .latency_ms.p95, rps: .requests_per_sec}')"
echo "batch during the second run: $progress"
echo "p95 ratio: $(jq -n --argjson a "$alone" --argjson b "$beside" '$b.latency_ms.p95 / $a.latency_ms.p95')"
