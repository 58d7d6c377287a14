#!/usr/bin/env bash
# Shared-mode load benchmark, one command: oha straight at the mock OpenAI upstream (nginx + njs), through
# tollgate in the embedded mode (SQLite + in-memory counters), through one tollgate in the shared mode
# (PostgreSQL store + Redis counters) and through three shared-mode tollgates behind nginx (an upstream of
# the three with a keep-alive pool), interleaved in one run, for JSON and SSE responses at each
# concurrency. Limits, metering and metrics are on in every tollgate, as in benches/load.sh. Prints one
# table, a row per mode, concurrency and target: requests per second and its ratio to the embedded mode,
# added p50 / p99 latency over direct, CPU microseconds per request (every tollgate of the target, and the
# nginx in front of the three), the CPU Redis and PostgreSQL spent per request, and peak RSS.
#
#   benches/shared_load.sh [-c "1 50 200"] [-d 10s] [-r 2] [-w 2s] [-m "json sse"] [-b BASELINE_BINARY]
#
#   -b  also runs one shared-mode instance of another tollgate binary (built from an earlier commit, say)
#       as the target "shared-base", in the same run, for a before / after comparison.
#
# Needs a PostgreSQL and a Redis: TOLLGATE_BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/test)
# and TOLLGATE_BENCH_REDIS (default redis://127.0.0.1:6379). Each shared target has its own schema
# (tg_bench_<target>_<pid>, dropped at the end) and its own key prefix (expiring with its counters).
# The first step installs nginx (+njs) and oha if they are missing (../shared/bench/setup.sh). Results land
# in target/shared-bench/<timestamp>/ (oha JSON, process samples, table.md).
# Env: TOLLGATE_BENCH_HARNESS (default ../shared/bench), TOLLGATE_BENCH_PORT (default 18797: the first
# tollgate; the others take the next ports, 2 each), TOLLGATE_BENCH_LB_PORT (nginx in front of the three,
# default 18092).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18797}"
LB_PORT="${TOLLGATE_BENCH_LB_PORT:-18092}"
PG_URL="${TOLLGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${TOLLGATE_BENCH_REDIS:-redis://127.0.0.1:6379}"
CONCS="1 50 200"; DUR="10s"; REPS=2; WARM="2s"; MODES="json sse"; BASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -c) CONCS="$2"; shift 2;;
    -d) DUR="$2"; shift 2;;
    -r) REPS="$2"; shift 2;;
    -w) WARM="$2"; shift 2;;
    -m) MODES="$2"; shift 2;;
    -b) BASE="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2;;
    *) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2;;
  esac
done
[ -x "$HARNESS/setup.sh" ] || { echo "load harness not found at $HARNESS" >&2; exit 1; }
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "-b: $BASE is not an executable" >&2; exit 2; }
pg_isready -q -d "$PG_URL" || { echo "no PostgreSQL at $PG_URL (TOLLGATE_BENCH_POSTGRES)" >&2; exit 1; }
REDIS_PID="$(redis-cli -u "$REDIS_URL" INFO server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')"
[ -n "$REDIS_PID" ] || { echo "no Redis at $REDIS_URL (TOLLGATE_BENCH_REDIS)" >&2; exit 1; }
PG_PID="$(pgrep -o -x postgres || true)"
reversed() { local out="" w; for w in $1; do out="$w${out:+ $out}"; done; echo "$out"; }
. "$ROOT/benches/common.sh"

prepare_run shared-bench
OHA="$(command -v oha)"
mkdir -p "$OUT/runs"
ulimit -n 20000 2>/dev/null || true

# Each target: its URL, the processes whose CPU and memory count for it, and its key.
TARGETS="direct embedded shared shared3"
[ -z "$BASE" ] || TARGETS="$TARGETS shared-base"
declare -A URL_OF PIDS_OF KEY_OF
URL_OF[direct]="http://127.0.0.1:18080"
SCHEMAS=()
# A shared-mode tollgate's configuration: shared_config PORT NAME (its schema and key prefix).
shared_config() {
  config "$1" "$OUT/unused.db" "http://127.0.0.1:18080" "worker_threads = 1" \
    | sed -e "s#^path = .*#backend = \"postgres\"\nurl = \"$PG_URL\"\nschema = \"tg_bench_$2_$$\"#"
  printf '[counters]\nbackend = "redis"\nurl = "%s"\nprefix = "tollgate-bench-%s-%s"\n' "$REDIS_URL" "$2" "$$"
}
tollgate_ports() {  # the ports of target T's tollgates
  case "$1" in
    embedded) echo "$PORT";; shared) echo $((PORT + 2));;
    shared3) echo $((PORT + 4)) $((PORT + 6)) $((PORT + 8));; shared-base) echo $((PORT + 10));;
  esac
}
for t in embedded shared shared3 shared-base; do
  case " $TARGETS " in *" $t "*) ;; *) continue;; esac
  bin="$BIN"; [ "$t" = shared-base ] && bin="$BASE"
  for p in $(tollgate_ports "$t"); do
    if [ "$t" = embedded ]; then
      config "$p" "$OUT/embedded.db" "http://127.0.0.1:18080" "worker_threads = 1" > "$OUT/$t-$p.toml"
    else
      shared_config "$p" "${t//-/_}" > "$OUT/$t-$p.toml"
    fi
  done
  [ "$t" = embedded ] || SCHEMAS+=("tg_bench_${t//-/_}_$$")
  first="$(tollgate_ports "$t" | cut -d' ' -f1)"
  KEY_OF[$t]="$("$bin" --config "$OUT/$t-$first.toml" keys create --name load-bench --rpm 10000000 \
    --daily 1000000000 --concurrency 10000 --tokens-per-month 100000000000 2>/dev/null)"
  URL_OF[$t]="http://127.0.0.1:$first"
done
URL_OF[shared3]="http://127.0.0.1:$LB_PORT"

taken=""
for p in $LB_PORT $(for t in $TARGETS; do tollgate_ports "$t"; done); do
  for q in "$p" $((p + 1)); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$q/"; then taken="$taken $q"; fi
  done
done
if [ -n "$taken" ]; then echo "ports in use:$taken (TOLLGATE_BENCH_PORT moves tollgate's)" >&2; exit 1; fi

# The mock is stopped at the end only if this run started it; the schemas are dropped.
STOP_MOCK=0
drop_schemas() {
  cleanup
  for s in "${SCHEMAS[@]+"${SCHEMAS[@]}"}"; do psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $s CASCADE" 2>/dev/null || true; done
}
start_cleanup
trap drop_schemas EXIT
curl -s -o /dev/null --max-time 2 http://127.0.0.1:18080/health || STOP_MOCK=1
"$W/mock/mock.sh" start >/dev/null
PIDS_OF[direct]="$(cat "$W/mock/run/logs/nginx.pid")"

# nginx in front of the three: round robin over them, a keep-alive pool to each.
mkdir -p "$OUT/lb/logs" "$OUT/lb/tmp"
{ echo "# Rendered by benches/shared_load.sh: peers/nginx-proxy/nginx.conf in front of three tollgates."
  sed -e "s#listen 127.0.0.1:18090 #listen 127.0.0.1:$LB_PORT #" \
    -e "s#server 127.0.0.1:18080;#$(for p in $(tollgate_ports shared3); do printf 'server 127.0.0.1:%s; ' "$p"; done)#" \
    -e "s#upstream openai_mock#upstream tollgates#" -e "s#proxy_pass http://openai_mock;#proxy_pass http://tollgates;#" \
    -e "/proxy_set_header Host /d" "$W/peers/nginx-proxy/nginx.conf"; } > "$OUT/lb/nginx.conf"
[ "$(grep -c -e "listen 127.0.0.1:$LB_PORT " -e "proxy_pass http://tollgates;" "$OUT/lb/nginx.conf")" = 2 ] \
  || { echo "peers/nginx-proxy/nginx.conf no longer has the lines the load balancer rewrites" >&2; exit 1; }
nginx -p "$OUT/lb/" -c nginx.conf -e logs/error.log > "$OUT/lb.log" 2>&1 &
LB_PID=$!; PIDS+=("$LB_PID")

for t in $TARGETS; do
  [ "$t" = direct ] && continue
  bin="$BIN"; [ "$t" = shared-base ] && bin="$BASE"
  PIDS_OF[$t]=""
  for p in $(tollgate_ports "$t"); do
    "$bin" --config "$OUT/$t-$p.toml" serve 2> "$OUT/$t-$p.log" &
    PIDS+=("$!"); PIDS_OF[$t]="${PIDS_OF[$t]} $!"
  done
done
PIDS_OF[shared3]="${PIDS_OF[shared3]} $LB_PID"
for t in $TARGETS; do
  [ "$t" = direct ] && continue
  for p in $(tollgate_ports "$t"); do
    wait_http "http://127.0.0.1:$p/readyz" || { echo "$t on $p did not start (see $OUT/$t-$p.log)" >&2; exit 1; }
  done
done
wait_http "http://127.0.0.1:$LB_PORT/" || { echo "the load balancer did not start" >&2; exit 1; }
for t in $TARGETS; do
  [ "$t" = direct ] && continue
  total=0
  for p in ${PIDS_OF[$t]}; do total=$((total + $(rss_kib "$p"))); done
  echo "$total" > "$OUT/$t-idle-rss-kb"
done

cp "$W/bodies/chat.json" "$OUT/body-json.json"
cp "$W/bodies/chat-stream.json" "$OUT/body-sse.json"
PROVIDER_KEY="sk-mock-provider-key"
target() {  # target TARGET -> URL, and H: its headers
  URL="${URL_OF[$1]}/v1/chat/completions"
  case "$1" in
    direct) H=(-H "Authorization: Bearer $PROVIDER_KEY");;
    *) H=(-H "Authorization: Bearer ${KEY_OF[$1]}" -H "X-Provider-Key: $PROVIDER_KEY");;
  esac
}
oha_run() {  # target mode c duration outfile
  target "$1"
  "$OHA" -z "$4" -c "$3" -w -t 30s --disable-compression --no-tui --worker-threads 2 -m POST \
    -H "Content-Type: application/json" "${H[@]}" -D "$OUT/body-$2.json" --output-format json -o "$5" "$URL" \
    > /dev/null 2> "$5.stderr" || true
  [ -s "$5.stderr" ] || rm -f "$5.stderr"
}

# Validation: each target answers 200 in both modes (the three instances: once each through nginx).
for t in $TARGETS; do
  for mode in $MODES; do
    for _ in $(tollgate_ports "$t" | tr ' ' '\n' | head -3; [ "$t" = direct ] && echo .); do
      target "$t"
      out="$OUT/check-$t-$mode.out"
      code=$(curl -sN -o "$out" -w '%{http_code}' -X POST "$URL" -H "Content-Type: application/json" \
        "${H[@]}" --data-binary @"$OUT/body-$mode.json")
      [ "$code" = 200 ] || { echo "$t $mode answered $code: $(head -c 300 "$out")" >&2; exit 1; }
    done
  done
done

echo "== shared load: targets=[$TARGETS] modes=[$MODES] c=[$CONCS] duration=$DUR reps=$REPS (results in $OUT)"
for mode in $MODES; do
  for c in $CONCS; do
    for t in $TARGETS; do oha_run "$t" "$mode" "$c" "$WARM" "$OUT/warmup.json"; done
    for rep in $(seq 1 "$REPS"); do
      order="$TARGETS"
      if [ $((rep % 2)) = 0 ]; then order="$(reversed "$order")"; fi
      for t in $order; do
        f="$OUT/runs/${t}_${mode}_c${c}_r${rep}.json"
        # shellcheck disable=SC2086 # a list of PIDs
        python3 "$W/harness/procstat.py" "${f%.json}.proc.json" ${PIDS_OF[$t]} > /dev/null 2>&1 &
        sampler=$!
        # The shared services' CPU (the whole Redis, every PostgreSQL process), for the shared targets.
        services=""
        case "$t" in
          shared*) python3 "$W/harness/procstat.py" "${f%.json}.services.json" "$REDIS_PID" $PG_PID > /dev/null 2>&1 &
            services=$!;;
        esac
        oha_run "$t" "$mode" "$c" "$DUR" "$f"
        kill "$sampler" $services; wait "$sampler" $services 2>/dev/null || true
        echo "-- $t $mode c=$c rep=$rep: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%.0f req/s" % s["requestsPerSec"])' "$f")"
      done
    done
  done
done
rm -f "$OUT/warmup.json"
for t in $TARGETS; do
  [ "$t" = direct ] && continue
  for p in $(tollgate_ports "$t"); do curl -s "$(metrics_url "$p")" > "$OUT/$t-$p-metrics.txt"; done
done
python3 "$ROOT/benches/shared_table.py" "$OUT" | tee "$OUT/table.md"
