#!/usr/bin/env bash
# Throughput through tollgate with limits, reservations and metering on versus off, same load settings,
# interleaved. Load comes from wrk with a Lua script that spreads requests over many service keys, so no
# key reaches its per-minute or per-day limit during the run (a single key may not exceed 1000 requests a
# minute, and oha sends one fixed set of headers).
#
#   benches/limits_load.sh [-c 50] [-d 10s] [-r 2] [-k 100]
#
# Uses the mock upstream of the load harness in ../shared/bench (nginx; its setup installs nginx and oha).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
CONC=50; DUR=10s; REPS=2; KEYS=100
while getopts "c:d:r:k:" o; do
  case "$o" in c) CONC=$OPTARG;; d) DUR=$OPTARG;; r) REPS=$OPTARG;; k) KEYS=$OPTARG;; *) exit 2;; esac
done
THREADS=$(( CONC < 2 ? 1 : 2 ))
. "$ROOT/benches/common.sh"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
W="$("$HARNESS/setup.sh" | tail -1)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/tollgate"
RUN="$(mktemp -d)"
trap 'kill -TERM "${PID:-0}" 2>/dev/null || true; rm -rf "$RUN"' EXIT

config "$PORT" "$RUN/tollgate.db" "http://127.0.0.1:18080" > "$RUN/on.toml"
sed 's/^enabled = true$/enabled = false/' "$RUN/on.toml" > "$RUN/off.toml"
"$BIN" --config "$RUN/on.toml" keys create --name load --count "$KEYS" --rpm 1000 --daily 10000 2>/dev/null > "$RUN/keys.txt"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$W/bodies/chat.json" > "$RUN/body.json"
keys_lua "$RUN/keys.txt" "$RUN/body.json" > "$RUN/keys.lua"
"$W/mock/mock.sh" start >/dev/null

run() {  # label config
  "$BIN" --config "$2" serve 2>/dev/null &
  PID=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done
  wrk -t"$THREADS" -c"$CONC" -d2s -s "$RUN/keys.lua" "http://127.0.0.1:$PORT" >/dev/null
  local before; before=$(cpu_ticks "$PID")
  local out; out=$(wrk -t"$THREADS" -c"$CONC" -d"$DUR" --latency -s "$RUN/keys.lua" "http://127.0.0.1:$PORT")
  local after; after=$(cpu_ticks "$PID")
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  local rps p50 p99 total non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  local cpu_us=$(( (after - before) * 10000 / (total > 0 ? total : 1) ))
  printf "| %-10s | %8s | %8s | %8s | %6s | %8s |\n" "$1" "$rps" "$p50" "$p99" "$cpu_us" "${non2xx:-0}"
}
echo "limits on vs off: wrk -t$THREADS -c$CONC -d$DUR, $KEYS keys, JSON chat completions against the nginx mock"
printf "| %-10s | %8s | %8s | %8s | %6s | %8s |\n" "limits" "req/s" "p50" "p99" "CPU µs" "non-2xx"
echo "|------------|----------|----------|----------|--------|----------|"
for _ in $(seq 1 "$REPS"); do
  run on "$RUN/on.toml"
  run off "$RUN/off.toml"
done
