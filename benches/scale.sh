#!/usr/bin/env bash
# Scale figures for tollgate (limits, metering and metrics on), one command:
#   1. memory per open stream with 10,000 concurrent slow SSE streams (one event a second for 30 s each,
#      from benches/slow_upstream.py; oha holds them over HTTP/2, 100 connections × 100 streams, since a
#      process here may open at most 20,000 files and each stream also holds an upstream connection);
#   2. start-up of the tollgate binary on a store with 1,000,000 keys: time until /readyz answers 200, and RSS;
#   3. requests per second with 10,000 distinct active keys (wrk rotating over the keys, JSON completions
#      from the nginx mock of ../shared/bench).
#
#   benches/scale.sh [-s 10000] [-k 10000] [-m 1000000] [-d 10s]
#
# Installs what it needs first (nginx + oha through ../shared/bench/setup.sh, wrk from Debian).
# Results land in target/scale-bench/<timestamp>/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
STREAMS=10000; ACTIVE=10000; STORED=1000000; DUR=10s
while getopts "s:k:m:d:" o; do
  case "$o" in s) STREAMS=$OPTARG;; k) ACTIVE=$OPTARG;; m) STORED=$OPTARG;; d) DUR=$OPTARG;; *) exit 2;; esac
done
. "$ROOT/benches/common.sh"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
prepare_run scale-bench
ulimit -n "$(ulimit -Hn)"
start_cleanup
wait_ready() { wait_http "http://127.0.0.1:$PORT/readyz"; }

# ---------------------------------------------------------------- 1. open streams
python3 "$ROOT/benches/slow_upstream.py" 18181 1.0 30 &
PIDS+=($!)
for _ in $(seq 1 100); do (: > /dev/tcp/127.0.0.1/18181) 2>/dev/null && break; sleep 0.1; done
config "$PORT" "$OUT/streams.db" "http://127.0.0.1:18181" "max_in_flight = 20000" > "$OUT/streams.toml"
KEY="$("$BIN" --config "$OUT/streams.toml" keys create --name streams --rpm 100000 --daily 1000000 --concurrency 10000 2>/dev/null)"
"$BIN" --config "$OUT/streams.toml" serve 2> "$OUT/streams.log" &
TG=$!; PIDS+=("$TG")
wait_ready
curl -s -o /dev/null "$(metrics_url "$PORT")"
IDLE=$(rss_kib "$TG")
oha -n "$STREAMS" -c $(( (STREAMS + 99) / 100 )) -p 100 --http2 --no-tui -t 120s --output-format json -o "$OUT/streams-oha.json" \
  -m POST -H "Content-Type: application/json" -H "Authorization: Bearer $KEY" -H "X-Provider-Key: sk-mock" \
  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}' \
  "http://127.0.0.1:$PORT/v1/chat/completions" > /dev/null 2>&1 &
OHA=$!
OPEN=0
for _ in $(seq 1 600); do
  OPEN=$(curl -s "$(metrics_url "$PORT")" | awk '/^tollgate_open_streams / {print $2}')
  [ "${OPEN:-0}" -ge "$STREAMS" ] && break
  sleep 0.1
done
sleep 2   # every stream open and relaying events
OPEN=$(curl -s "$(metrics_url "$PORT")" | awk '/^tollgate_open_streams / {print $2}')
HELD=$(rss_kib "$TG")
wait "$OHA" || true
OK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"].get("200", 0))' "$OUT/streams-oha.json")
kill -TERM "$TG"; wait "$TG" 2>/dev/null || true
echo "## Open streams"
echo "idle RSS $(( IDLE / 1024 )) MiB; with $OPEN streams open: RSS $(( HELD / 1024 )) MiB," \
  "$(( (HELD - IDLE) / (OPEN > 0 ? OPEN : 1) )) KiB per open stream; $OK of $STREAMS streams completed with 200"

# ---------------------------------------------------------------- 2. start-up with many keys
(cd "$ROOT" && TOLLGATE_BENCH_KEYS="$STORED" TOLLGATE_BENCH_DB="$OUT/million.db" cargo bench --quiet --bench startup) \
  > "$OUT/startup-bench.txt" 2>&1
config "$PORT" "$OUT/million.db" "http://127.0.0.1:18080" > "$OUT/million.toml"
T0=$(date +%s%N)
"$BIN" --config "$OUT/million.toml" serve 2> "$OUT/million.log" &
TG=$!; PIDS+=("$TG")
wait_ready
T1=$(date +%s%N)
echo "## Start-up with $STORED keys"
echo "binary ready to serve after $(( (T1 - T0) / 1000000 )) ms, RSS $(( $(rss_kib "$TG") / 1024 )) MiB" \
  "(in-process: $(tail -1 "$OUT/startup-bench.txt"))"
kill -TERM "$TG"; wait "$TG" 2>/dev/null || true

# ---------------------------------------------------------------- 3. many active keys
"$W/mock/mock.sh" start >/dev/null
config "$PORT" "$OUT/active.db" "http://127.0.0.1:18080" > "$OUT/active.toml"
"$BIN" --config "$OUT/active.toml" keys create --name active --count "$ACTIVE" --rpm 1000 --daily 10000 2>/dev/null > "$OUT/keys.txt"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$W/bodies/chat.json" > "$OUT/body.json"
keys_lua "$OUT/keys.txt" "$OUT/body.json" > "$OUT/keys.lua"
"$BIN" --config "$OUT/active.toml" serve 2> "$OUT/active.log" &
TG=$!; PIDS+=("$TG")
wait_ready
wrk -t2 -c50 -d3s -s "$OUT/keys.lua" "http://127.0.0.1:$PORT" > /dev/null
BEFORE=$(cpu_ticks "$TG")
wrk -t2 -c50 -d"$DUR" --latency -s "$OUT/keys.lua" "http://127.0.0.1:$PORT" > "$OUT/active-wrk.txt"
AFTER=$(cpu_ticks "$TG")
TOTAL=$(awk '/requests in/ {print $1}' "$OUT/active-wrk.txt")
echo "## $ACTIVE distinct active keys (wrk -c50 -d$DUR, each request the next key)"
echo "$(awk '/Requests\/sec/ {print $2}' "$OUT/active-wrk.txt") req/s, p50 $(awk '$1=="50%" {print $2}' "$OUT/active-wrk.txt")," \
  "p99 $(awk '$1=="99%" {print $2}' "$OUT/active-wrk.txt"), CPU $(( (AFTER - BEFORE) * 10000 / (TOTAL > 0 ? TOTAL : 1) )) µs/req," \
  "non-2xx: $(awk '/Non-2xx/ {print $NF}' "$OUT/active-wrk.txt" | grep . || echo 0)," \
  "RSS $(( $(rss_kib "$TG") / 1024 )) MiB"
