#!/usr/bin/env bash
# End-to-end load benchmark, one command: oha straight at a mock OpenAI upstream (nginx + njs), through nginx
# `proxy_pass` (the reference proxy: no auth, no limits, no metering) and through tollgate with authentication,
# limits, metering and metrics all on, interleaved in one run, for JSON and SSE responses at each concurrency.
# Prints one table: requests per second and its ratio to direct and to nginx, added p50 / p99 latency, CPU
# microseconds per request and peak RSS of each proxy.
#
#   benches/load.sh [-c "1 50 200"] [-d 10s] [-r 2] [-w 2s] [-m "json sse"]
#
# The first step installs nginx (+njs) and oha if they are missing (../shared/bench/setup.sh). Results land in
# target/load-bench/<timestamp>/ (oha JSON, process samples, table.md).
# Env: TOLLGATE_BENCH_HARNESS (default ../shared/bench), TOLLGATE_BENCH_PORT (default 18787).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
CONCS="1 50 200"; DUR="10s"; REPS=2; WARM="2s"; MODES="json sse"
while [ $# -gt 0 ]; do
  case "$1" in
    -c) CONCS="$2"; shift 2;;
    -d) DUR="$2"; shift 2;;
    -r) REPS="$2"; shift 2;;
    -w) WARM="$2"; shift 2;;
    -m) MODES="$2"; shift 2;;
    *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2;;
  esac
done
[ -x "$HARNESS/setup.sh" ] || { echo "load harness not found at $HARNESS" >&2; exit 1; }
. "$ROOT/benches/common.sh"

W="$("$HARNESS/setup.sh" | tail -1)"
export PATH="$PATH:$HOME/.cargo/bin"
OHA="$(command -v oha)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/tollgate"
OUT="$ROOT/target/load-bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/runs"
ulimit -n 20000 2>/dev/null || true

# Limits on for real: every request passes concurrency, per-minute (GCRA), per-day and both monthly token
# quotas (the key's and its plan's), reserves and settles tokens, and is metered from the response. The
# operator grants the bench key ceilings above the load so that the run measures admitted requests.
# One worker thread, as the reference nginx runs one worker process.
config "$PORT" "$OUT/tollgate.db" "http://127.0.0.1:18080" "worker_threads = 1" > "$OUT/proxy.toml"
KEY="$("$BIN" --config "$OUT/proxy.toml" keys create --name load-bench --rpm 10000000 --daily 1000000000 \
  --concurrency 10000 --tokens-per-month 100000000000 2>/dev/null)"

start_cleanup

"$W/mock/mock.sh" start >/dev/null
MOCK_PID="$(cat "$W/mock/run/logs/nginx.pid")"
mkdir -p "$W/peers/nginx-proxy/logs" "$W/peers/nginx-proxy/tmp"
nginx -p "$W/peers/nginx-proxy/" -c nginx.conf -e logs/error.log > "$OUT/nginx.log" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
"$BIN" --config "$OUT/proxy.toml" serve 2> "$OUT/tollgate.log" &
TOLLGATE_PID=$!; PIDS+=("$TOLLGATE_PID")
wait_http http://127.0.0.1:18090/ || { echo "nginx proxy did not start" >&2; exit 1; }
wait_http "http://127.0.0.1:$PORT/readyz" || { echo "tollgate did not start" >&2; exit 1; }
rss_kib "$TOLLGATE_PID" > "$OUT/tollgate-idle-rss-kb"

cp "$W/bodies/chat.json" "$OUT/body-json.json"
cp "$W/bodies/chat-stream.json" "$OUT/body-sse.json"
PROVIDER_KEY="sk-mock-provider-key"
target() {  # target -> URL, and H: its headers (for oha and curl)
  local auth="Authorization: Bearer $PROVIDER_KEY"
  case "$1" in
    direct) URL="http://127.0.0.1:18080/v1/chat/completions"; H=(-H "$auth");;
    nginx) URL="http://127.0.0.1:18090/v1/chat/completions"; H=(-H "$auth");;
    tollgate) URL="http://127.0.0.1:$PORT/v1/chat/completions"
              H=(-H "Authorization: Bearer $KEY" -H "X-Provider-Key: $PROVIDER_KEY");;
  esac
}
target_pid() { case "$1" in direct) echo "$MOCK_PID";; nginx) echo "$NGINX_PID";; tollgate) echo "$TOLLGATE_PID";; esac; }

oha_run() {  # target mode c duration outfile
  target "$1"
  "$OHA" -z "$4" -c "$3" -w -t 30s --disable-compression --no-tui --worker-threads 2 -m POST \
    -H "Content-Type: application/json" "${H[@]}" -D "$OUT/body-$2.json" --output-format json -o "$5" "$URL" \
    > /dev/null 2> "$5.stderr" || true
  [ -s "$5.stderr" ] || rm -f "$5.stderr"
}

# Validation: each target answers 200 in both modes.
for t in direct nginx tollgate; do
  for mode in $MODES; do
    target "$t"
    code=$(curl -sN -o "$OUT/check-$t-$mode.out" -w '%{http_code}' -X POST "$URL" -H "Content-Type: application/json" \
      "${H[@]}" --data-binary @"$OUT/body-$mode.json")
    [ "$code" = 200 ] || { echo "$t $mode answered $code: $(head -c 300 "$OUT/check-$t-$mode.out")" >&2; exit 1; }
  done
done

echo "== load: modes=[$MODES] c=[$CONCS] duration=$DUR reps=$REPS (results in $OUT)"
for mode in $MODES; do
  for c in $CONCS; do
    for t in direct nginx tollgate; do oha_run "$t" "$mode" "$c" "$WARM" "$OUT/warmup.json"; done
    for rep in $(seq 1 "$REPS"); do
      order="direct nginx tollgate"; [ $((rep % 2)) = 0 ] && order="tollgate nginx direct"
      for t in $order; do
        f="$OUT/runs/${t}_${mode}_c${c}_r${rep}.json"
        python3 "$W/harness/procstat.py" "${f%.json}.proc.json" "$(target_pid "$t")" > /dev/null 2>&1 &
        sampler=$!
        oha_run "$t" "$mode" "$c" "$DUR" "$f"
        kill "$sampler"; wait "$sampler" 2>/dev/null || true
        echo "-- $t $mode c=$c rep=$rep: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%.0f req/s" % s["requestsPerSec"])' "$f")"
      done
    done
  done
done
rm -f "$OUT/warmup.json"
curl -s "$(metrics_url "$PORT")" > "$OUT/metrics.txt"
python3 "$ROOT/benches/load_table.py" "$OUT" | tee "$OUT/table.md"
