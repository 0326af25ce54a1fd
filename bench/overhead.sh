#!/usr/bin/env bash
# Hub overhead, in one run, against one zero-latency simulated backend:
#   direct            the load straight at the backend;
#   through nginx     a plain keep-alive reverse proxy, the floor for
#                     "forward the bytes";
#   through drover    the hub.
# Prints requests/s and CPU time per request of each proxy (from /proc, the
# same way for both), and the ratios.
#   bench/overhead.sh [--stream]     (N=20000 C=32 to change the load,
#                                     HUB_THREADS=2 for the hub's --threads,
#                                     BEFORE=path/to/older/drover to measure
#                                     an older build of the hub in the same
#                                     run, as "before")
source "$(dirname "$0")/lib.sh"
N=${N:-20000}
C=${C:-32}
SIM_PORT=${SIM_PORT:-19101}
HUB_PORT=${HUB_PORT:-19100}
NGINX_PORT=${NGINX_PORT:-19102}
need nginx nginx

zero_latency_sim "$SIM_PORT"
DROVER_LOG=warn "$DROVER" serve --data-dir "$(mktemp -d)" ${HUB_THREADS:+--threads $HUB_THREADS} --listen 127.0.0.1:$HUB_PORT \
  --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>&1 &
HUB_PID=$!
PIDS+=($HUB_PID)
BEFORE_PORT=${BEFORE_PORT:-19103}
if [ -n "${BEFORE:-}" ]; then
  DROVER_LOG=warn "$BEFORE" serve --data-dir "$(mktemp -d)" ${HUB_THREADS:+--threads $HUB_THREADS} --listen 127.0.0.1:$BEFORE_PORT \
    --backend openai=http://127.0.0.1:$SIM_PORT,slots=1024 >/dev/null 2>&1 &
  BEFORE_PID=$!
  PIDS+=($BEFORE_PID)
fi

NGINX_DIR=$(mktemp -d)
cat >"$NGINX_DIR/nginx.conf" <<CONF
worker_processes 2;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($NGINX_PID)
CLEANUP_DIRS+=("$NGINX_DIR")

wait_http http://127.0.0.1:$SIM_PORT/v1/models
wait_http http://127.0.0.1:$HUB_PORT/ready
wait_http http://127.0.0.1:$NGINX_PORT/v1/models
[ -n "${BEFORE:-}" ] && wait_http http://127.0.0.1:$BEFORE_PORT/ready
# The master and its workers (whose command lines do not name the config).
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }

# run NAME URL PIDS...: one load, its JSON report with the CPU of PIDS added.
run() {
  local name=$1 url=$2
  shift 2
  local before after
  before=$(cpu_ticks "$@")
  "$DROVER" bench --url "$url" --model m --concurrency "$C" --requests "$N" --warmup 1000 \
    --json "${EXTRA[@]}" | sed -n '/^\[/,$p' >"$NGINX_DIR/$name.json"
  after=$(cpu_ticks "$@")
  echo "$name $((after - before))" >>"$NGINX_DIR/cpu"
}
EXTRA=("$@")
run direct http://127.0.0.1:$SIM_PORT
run nginx http://127.0.0.1:$NGINX_PORT $(nginx_pids)
run drover http://127.0.0.1:$HUB_PORT $HUB_PID
[ -n "${BEFORE:-}" ] && run before http://127.0.0.1:$BEFORE_PORT $BEFORE_PID

python3 - "$NGINX_DIR" "$N" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
cpu = dict(l.split() for l in open(f"{d}/cpu"))
rows = {}
for name in ("direct", "nginx", "drover", "before"):
    try:
        rows[name] = json.load(open(f"{d}/{name}.json"))[0]
    except FileNotFoundError:
        pass
hz = 100  # USER_HZ
print(f"{'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'proxy CPU us/req':>17}")
for name, r in rows.items():
    us = "" if name == "direct" else f"{int(cpu[name]) / hz * 1e6 / n:.1f}"
    print(f"{name:<8} {r['requests_per_sec']:>9.0f} {r['latency_ms']['p50']:>8.2f} "
          f"{r['latency_ms']['p99']:>8.2f} {r['errors']:>7} {us:>17}")
rps = {k: v["requests_per_sec"] for k, v in rows.items()}
print(f"\ndrover / direct: {rps['drover'] / rps['direct']:.2f}   "
      f"nginx / direct: {rps['nginx'] / rps['direct']:.2f}   "
      f"drover / nginx: {rps['drover'] / rps['nginx']:.2f}")
print(f"CPU per request, drover / nginx: "
      f"{int(cpu['drover']) / max(1, int(cpu['nginx'])):.2f}")
if "before" in rows:
    print(f"before / nginx: {rps['before'] / rps['nginx']:.2f}   "
          f"CPU per request, before / nginx: "
          f"{int(cpu['before']) / max(1, int(cpu['nginx'])):.2f}")
PY
