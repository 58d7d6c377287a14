#!/usr/bin/env bash
# End-to-end load benchmark, one command: oha straight at a mock OpenAI upstream (nginx + njs), through nginx
# `proxy_pass` (the reference proxy: no auth, no limits, no metering) and through tollgate with authentication,
# limits, metering and metrics all on, interleaved in one run, for JSON and SSE responses at each concurrency.
# Prints one table: requests per second and its ratio to direct and to nginx, added p50 / p99 latency, CPU
# microseconds per request and peak RSS of each proxy, one row per transport, mode and concurrency.
#
#   benches/load.sh [-c "1 50 200"] [-d 10s] [-r 2] [-w 2s] [-m "json sse"] [-t "http https"] [-u h2]
#
#   -t  transports of the proxy -> upstream leg. http: the mock as it is. https: the same mock behind TLS
#       (a throwaway CA and a certificate for 127.0.0.1 made with openssl in the results folder); "direct" is
#       then oha over TLS to it, nginx uses `proxy_pass https://` with a keep-alive pool and verifies the
#       certificate, tollgate has base_url = "https://127.0.0.1:…" and ca_file = the CA. Callers always speak
#       plain HTTP/1.1 to the proxies.
#   -u  tollgate's protocol to the https upstream, one tollgate process each: h2 ([upstream] http2 = true,
#       the default; the mock picks h2 by ALPN) and/or h1 (http2 = false: a pool of HTTP/1.1 connections).
#       -u "h1 h2" compares them.
#
# The first step installs nginx (+njs) and oha if they are missing (../shared/bench/setup.sh). Results land in
# target/load-bench/<timestamp>/ (oha JSON, process samples, table.md).
# Env: TOLLGATE_BENCH_HARNESS (default ../shared/bench), TOLLGATE_BENCH_PORT (default 18787; the https
# tollgates take the next ports, 2 each), TOLLGATE_BENCH_TLS_PORT (the TLS mock, default 18443; nginx's https
# variant listens on 18091).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
TLS_PORT="${TOLLGATE_BENCH_TLS_PORT:-18443}"
NGINX_TLS_PORT=18091
CONCS="1 50 200"; DUR="10s"; REPS=2; WARM="2s"; MODES="json sse"; TRANSPORTS="http https"; UPS="h2"
while [ $# -gt 0 ]; do
  case "$1" in
    -c) CONCS="$2"; shift 2;;
    -d) DUR="$2"; shift 2;;
    -r) REPS="$2"; shift 2;;
    -w) WARM="$2"; shift 2;;
    -m) MODES="$2"; shift 2;;
    -t) TRANSPORTS="$2"; shift 2;;
    -u) UPS="$2"; shift 2;;
    *) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2;;
  esac
done
for t in $TRANSPORTS; do case "$t" in http|https) ;; *) echo "-t: http and/or https, not $t" >&2; exit 2;; esac; done
for u in $UPS; do case "$u" in h1|h2) ;; *) echo "-u: h1 and/or h2, not $u" >&2; exit 2;; esac; done
if [ -z "$TRANSPORTS" ] || [ -z "$UPS" ]; then echo "-t and -u need at least one value" >&2; exit 2; fi
[ -x "$HARNESS/setup.sh" ] || { echo "load harness not found at $HARNESS" >&2; exit 1; }
has() { case " $1 " in *" $2 "*) return 0;; *) return 1;; esac; }
reversed() { local out="" w; for w in $1; do out="$w${out:+ $out}"; done; echo "$out"; }
. "$ROOT/benches/common.sh"

prepare_run load-bench
OHA="$(command -v oha)"
mkdir -p "$OUT/runs"
ulimit -n 20000 2>/dev/null || true

# The targets of each transport, and for each target its URL, process, port and key.
declare -A TARGETS URL_OF PID_OF PORT_OF KEY_OF
TARGETS[http]="direct nginx tollgate"
TARGETS[https]="direct nginx$(for u in $UPS; do printf ' tollgate-%s' "$u"; done)"
URL_OF[http/direct]="http://127.0.0.1:18080"
URL_OF[http/nginx]="http://127.0.0.1:18090"
URL_OF[https/direct]="https://127.0.0.1:$TLS_PORT"
URL_OF[https/nginx]="http://127.0.0.1:$NGINX_TLS_PORT"
PORT_OF[http/tollgate]=$PORT
i=0
for u in $UPS; do i=$((i + 1)); PORT_OF[https/tollgate-$u]=$((PORT + 2 * i)); done

# Limits on for real: every request passes concurrency, per-minute (GCRA), per-day and both monthly token
# quotas (the key's and its plan's), reserves and settles tokens, and is metered from the response. The
# operator grants the bench key ceilings above the load so that the run measures admitted requests.
# One worker thread, as the reference nginx runs one worker process. Each tollgate has a store of its own.
if has "$TRANSPORTS" https; then tls_assets "$OUT/tls"; fi
for tr in $TRANSPORTS; do
  for t in ${TARGETS[$tr]}; do
    case "$t" in tollgate*) ;; *) continue;; esac
    port=${PORT_OF[$tr/$t]}
    URL_OF[$tr/$t]="http://127.0.0.1:$port"
    if [ "$tr" = http ]; then
      config "$port" "$OUT/$t.db" "http://127.0.0.1:18080" "worker_threads = 1" > "$OUT/$t.toml"
    else
      { config "$port" "$OUT/$t.db" "https://127.0.0.1:$TLS_PORT" "worker_threads = 1"
        http2=false; [ "$t" = tollgate-h2 ] && http2=true
        printf '[upstream]\nca_file = "%s"\nhttp2 = %s\n' "$OUT/tls/ca.pem" "$http2"
      } > "$OUT/$t.toml"
    fi
    KEY_OF[$tr/$t]="$("$BIN" --config "$OUT/$t.toml" keys create --name load-bench --rpm 10000000 \
      --daily 1000000000 --concurrency 10000 --tokens-per-month 100000000000 2>/dev/null)"
  done
done

# Every listener of the run on a free port (the plain mock may already be up: it is then used as it is).
taken=""
for p in $(has "$TRANSPORTS" http && echo 18090) $(has "$TRANSPORTS" https && echo "$TLS_PORT $NGINX_TLS_PORT"); do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then taken="$taken $p"; fi
done
for k in "${!PORT_OF[@]}"; do
  for p in "${PORT_OF[$k]}" "$((PORT_OF[$k] + 1))"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then taken="$taken $p"; fi
  done
done
if [ -n "$taken" ]; then echo "ports in use:$taken (TOLLGATE_BENCH_PORT moves tollgate's)" >&2; exit 1; fi

# The plain mock is stopped at the end only if this run started it.
STOP_MOCK=0
start_cleanup

if has "$TRANSPORTS" http; then
  curl -s -o /dev/null --max-time 2 http://127.0.0.1:18080/health || STOP_MOCK=1
  "$W/mock/mock.sh" start >/dev/null
  PID_OF[http/direct]="$(cat "$W/mock/run/logs/nginx.pid")"
  mkdir -p "$W/peers/nginx-proxy/logs" "$W/peers/nginx-proxy/tmp"
  nginx -p "$W/peers/nginx-proxy/" -c nginx.conf -e logs/error.log > "$OUT/nginx.log" 2>&1 &
  PID_OF[http/nginx]=$!; PIDS+=("$!")
fi
if has "$TRANSPORTS" https; then
  tls_mock_conf "$OUT/tls-mock" "$TLS_PORT" "$OUT/tls"
  nginx -p "$OUT/tls-mock/" -c nginx.conf -e logs/error.log > "$OUT/tls-mock.log" 2>&1 &
  PID_OF[https/direct]=$!; PIDS+=("$!")
  nginx_https_conf "$OUT/nginx-https" "$NGINX_TLS_PORT" "$TLS_PORT" "$OUT/tls"
  nginx -p "$OUT/nginx-https/" -c nginx.conf -e logs/error.log > "$OUT/nginx-https.log" 2>&1 &
  PID_OF[https/nginx]=$!; PIDS+=("$!")
fi
for tr in $TRANSPORTS; do
  for t in ${TARGETS[$tr]}; do
    case "$t" in tollgate*) ;; *) continue;; esac
    "$BIN" --config "$OUT/$t.toml" serve 2> "$OUT/$t.log" &
    PID_OF[$tr/$t]=$!; PIDS+=("$!")
  done
done
for tr in $TRANSPORTS; do
  for t in ${TARGETS[$tr]}; do
    url="${URL_OF[$tr/$t]}/"
    case "$t" in tollgate*) url="${URL_OF[$tr/$t]}/readyz";; esac
    wait_http "$url" --cacert "$OUT/tls/ca.pem" || { echo "$tr $t did not start on $url" >&2; exit 1; }
    case "$t" in tollgate*) rss_kib "${PID_OF[$tr/$t]}" > "$OUT/$t-idle-rss-kb";; esac
  done
done

cp "$W/bodies/chat.json" "$OUT/body-json.json"
cp "$W/bodies/chat-stream.json" "$OUT/body-sse.json"
PROVIDER_KEY="sk-mock-provider-key"
target() {  # target TRANSPORT TARGET -> URL, and H: its headers and TLS trust (for oha and curl)
  local auth="Authorization: Bearer $PROVIDER_KEY"
  URL="${URL_OF[$1/$2]}/v1/chat/completions"
  case "$2" in
    direct|nginx) H=(-H "$auth");;
    *) H=(-H "Authorization: Bearer ${KEY_OF[$1/$2]}" -H "X-Provider-Key: $PROVIDER_KEY");;
  esac
  case "$URL" in https:*) H+=(--cacert "$OUT/tls/ca.pem");; esac
}

oha_run() {  # transport target mode c duration outfile
  target "$1" "$2"
  "$OHA" -z "$5" -c "$4" -w -t 30s --disable-compression --no-tui --worker-threads 2 -m POST \
    -H "Content-Type: application/json" "${H[@]}" -D "$OUT/body-$3.json" --output-format json -o "$6" "$URL" \
    > /dev/null 2> "$6.stderr" || true
  [ -s "$6.stderr" ] || rm -f "$6.stderr"
}

# Validation: each target answers 200 in both modes.
for tr in $TRANSPORTS; do
  for t in ${TARGETS[$tr]}; do
    for mode in $MODES; do
      target "$tr" "$t"
      out="$OUT/check-$tr-$t-$mode.out"
      code=$(curl -sN -o "$out" -w '%{http_code}' -X POST "$URL" -H "Content-Type: application/json" \
        "${H[@]}" --data-binary @"$OUT/body-$mode.json")
      [ "$code" = 200 ] || { echo "$tr $t $mode answered $code: $(head -c 300 "$out")" >&2; exit 1; }
    done
  done
done

echo "== load: transports=[$TRANSPORTS] tollgate to https=[$UPS] modes=[$MODES] c=[$CONCS] duration=$DUR" \
  "reps=$REPS (results in $OUT)"
for mode in $MODES; do
  for c in $CONCS; do
    for tr in $TRANSPORTS; do
      for t in ${TARGETS[$tr]}; do oha_run "$tr" "$t" "$mode" "$c" "$WARM" "$OUT/warmup.json"; done
      for rep in $(seq 1 "$REPS"); do
        order="${TARGETS[$tr]}"
        if [ $((rep % 2)) = 0 ]; then order="$(reversed "$order")"; fi
        for t in $order; do
          f="$OUT/runs/${t}_${tr}_${mode}_c${c}_r${rep}.json"
          python3 "$W/harness/procstat.py" "${f%.json}.proc.json" "${PID_OF[$tr/$t]}" > /dev/null 2>&1 &
          sampler=$!
          oha_run "$tr" "$t" "$mode" "$c" "$DUR" "$f"
          kill "$sampler"; wait "$sampler" 2>/dev/null || true
          echo "-- $tr $t $mode c=$c rep=$rep: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%.0f req/s" % s["requestsPerSec"])' "$f")"
        done
      done
    done
  done
done
rm -f "$OUT/warmup.json"
for tr in $TRANSPORTS; do
  for t in ${TARGETS[$tr]}; do
    case "$t" in tollgate*) curl -s "$(metrics_url "${PORT_OF[$tr/$t]}")" > "$OUT/$t-metrics.txt";; esac
  done
done
python3 "$ROOT/benches/load_table.py" "$OUT" | tee "$OUT/table.md"
