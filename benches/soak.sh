#!/usr/bin/env bash
# Soak: tollgate under steady mixed load for a long run, its resident memory and open descriptors sampled
# at a fixed interval; both must stay flat.
#
#   benches/soak.sh [-m 30] [-i 60] [-q 250]
#
#   -m  minutes of load (default 30)      -i  seconds between samples (default 60)
#   -q  requests per second per load client (default 250; four clients: JSON and SSE on two keys each)
#
# The load: four oha clients at a fixed rate against the nginx mock of ../shared/bench, two sending JSON
# chat completions and two streaming (SSE), each with its own service key; a management client that, in a
# loop, creates a key over the HTTP API, sends one completion with it, renames it, lists the keys, reads
# the usage and revokes it, and creates an account once a minute. Limits, metering, metrics and the access
# log are on. Results land in target/soak/<timestamp>/: samples.csv (seconds, RSS KiB, descriptors,
# requests served), soak.svg (the curve) and the oha outputs. The run fails if the last sample's RSS is
# more than 10% + 4 MiB above the sample at one fifth of the run, or if its descriptors are more than 16
# above it: growth after the warm-up is a leak.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
MINUTES=30; INTERVAL=60; QPS=250
while getopts "m:i:q:" o; do
  case "$o" in m) MINUTES=$OPTARG;; i) INTERVAL=$OPTARG;; q) QPS=$OPTARG;; *) sed -n '2,18p' "$0"; exit 2;; esac
done
. "$ROOT/benches/common.sh"
prepare_run soak
ulimit -n 20000 2>/dev/null || true

ADMIN="$(openssl rand -hex 24)"
SESSION_SECRET="$(openssl rand -hex 32)"
export TOLLGATE_ADMIN_TOKEN="$ADMIN" TOLLGATE_SESSION_SECRET="$SESSION_SECRET"
config "$PORT" "$OUT/tollgate.db" "http://127.0.0.1:18080" > "$OUT/proxy.toml"
KEYS=()
for i in 1 2 3 4; do
  KEYS+=("$("$BIN" --config "$OUT/proxy.toml" keys create --name "soak-$i" --rpm 10000000 --daily 1000000000 \
    --concurrency 1000 --tokens-per-month 100000000000 2>/dev/null)")
done

start_cleanup
"$W/mock/mock.sh" start >/dev/null
"$BIN" --config "$OUT/proxy.toml" serve 2> "$OUT/tollgate.log" &
PID=$!; PIDS+=("$PID")
BASE="http://127.0.0.1:$PORT"
wait_http "$BASE/readyz" || { echo "tollgate did not start" >&2; exit 1; }

# One account whose token drives the management loop.
PASSWORD="soak passphrase $RANDOM$RANDOM"
curl -sf "$BASE/v1/accounts" -H "Authorization: Bearer $ADMIN" \
  -d "{\"email\":\"soak@example.com\",\"password\":\"$PASSWORD\",\"key_cap\":100}" > /dev/null
TOKEN="$(curl -sf "$BASE/v1/auth/login" -d "{\"email\":\"soak@example.com\",\"password\":\"$PASSWORD\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# Management calls until the load ends: every response must be the documented success.
manage() {
  local deadline=$1 n=0 code
  local auth=(-H "Authorization: Bearer $TOKEN")
  while [ "$(date +%s)" -lt "$deadline" ]; do
    n=$((n + 1))
    local created id raw
    created="$(curl -sf "${auth[@]}" "$BASE/v1/auth/keys" -d "{\"name\":\"churn-$n\",\"scopes\":[\"chat\"]}")"
    id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<< "$created")"
    raw="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["raw_key"])' <<< "$created")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/chat/completions" -H "Authorization: Bearer $raw" \
      -H "X-Provider-Key: sk-mock-provider-key" -H "Content-Type: application/json" --data-binary @"$W/bodies/chat.json")
    [ "$code" = 200 ] || echo "churn key $n: completion answered $code" >> "$OUT/errors.log"
    curl -sf "${auth[@]}" -X PATCH "$BASE/v1/auth/keys/$id" -d "{\"name\":\"churn-$n-renamed\"}" > /dev/null ||
      echo "churn key $n: rename failed" >> "$OUT/errors.log"
    curl -sf "${auth[@]}" "$BASE/v1/auth/keys" > /dev/null || echo "list failed" >> "$OUT/errors.log"
    curl -sf "${auth[@]}" "$BASE/v1/usage?group_by=model" > /dev/null || echo "usage failed" >> "$OUT/errors.log"
    curl -sf "${auth[@]}" -X DELETE "$BASE/v1/auth/keys/$id" > /dev/null ||
      echo "churn key $n: revoke failed" >> "$OUT/errors.log"
    if [ $((n % 60)) = 0 ]; then
      curl -sf "$BASE/v1/accounts" -H "Authorization: Bearer $ADMIN" \
        -d "{\"email\":\"soak-$n@example.com\",\"password\":\"$PASSWORD\"}" > /dev/null ||
        echo "account $n: create failed" >> "$OUT/errors.log"
    fi
    sleep 1
  done
  echo "$n" > "$OUT/management-rounds"
}

served() {  # requests answered so far, from the metrics endpoint
  curl -s "$(metrics_url "$PORT")" |
    awk '/^tollgate_requests_total/ { s += $NF } END { printf "%d", s }'
}
sample() { echo "$1,$(rss_kib "$PID"),$(find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l),$(served)" >> "$OUT/samples.csv"; }

echo "seconds,rss_kib,fds,requests" > "$OUT/samples.csv"
sample 0
START=$(date +%s)
END=$((START + MINUTES * 60))
LOADS=()
for i in 0 1 2 3; do
  mode=json; [ "$i" -ge 2 ] && mode=sse
  body="$W/bodies/chat.json"; [ "$mode" = sse ] && body="$W/bodies/chat-stream.json"
  oha -z "$((MINUTES * 60))s" -c 8 -q "$QPS" --no-tui --disable-compression -m POST -H "Content-Type: application/json" \
    -H "Authorization: Bearer ${KEYS[$i]}" -H "X-Provider-Key: sk-mock-provider-key" -D "$body" \
    --output-format json -o "$OUT/oha-$i-$mode.json" "$BASE/v1/chat/completions" > /dev/null 2>&1 &
  LOADS+=($!); PIDS+=($!)
done
manage "$END" &
LOADS+=($!); PIDS+=($!)

echo "== soak: $MINUTES min, 4 × $QPS req/s (2 JSON, 2 SSE) + management churn; samples every ${INTERVAL}s in $OUT"
next=$((START + INTERVAL))
while [ "$next" -le "$END" ]; do
  sleep $((next - $(date +%s) > 0 ? next - $(date +%s) : 0))
  sample $((next - START))
  tail -1 "$OUT/samples.csv"
  next=$((next + INTERVAL))
done
for p in "${LOADS[@]}"; do wait "$p" || true; done
sample "$(( $(date +%s) - START ))"

status=0
python3 - "$OUT"/oha-*.json <<'PY' || status=1
import json, sys
bad = 0
for path in sys.argv[1:]:
    s = json.load(open(path))
    codes = s.get("statusCodeDistribution", {})
    # Requests still in flight when the duration ends are cut by oha itself ("aborted due to deadline").
    errors = sum(n for e, n in s.get("errorDistribution", {}).items() if "deadline" not in e)
    bad += errors + sum(n for code, n in codes.items() if code != "200")
    print(f"{path.rsplit('/', 1)[-1]}: {s['summary']['requestsPerSec']:.0f} req/s, status {codes}, errors {errors}")
sys.exit(1 if bad else 0)
PY
failures=0
[ -f "$OUT/errors.log" ] && failures=$(wc -l < "$OUT/errors.log")
echo "management rounds: $(cat "$OUT/management-rounds" 2>/dev/null || echo 0); failures: $failures"
[ "$failures" = 0 ] || { head -5 "$OUT/errors.log"; status=1; }
python3 "$ROOT/benches/soak_plot.py" "$OUT/samples.csv" "$OUT/soak.svg" || status=1
exit "$status"
