#!/usr/bin/env bash
# End-to-end load comparison: oha straight at a mock OpenAI upstream (nginx) versus through tollgate with
# service-key authentication on, interleaved in one run, with tollgate's CPU per request and peak RSS.
# Uses the load harness in ../shared/bench (mock, oha, compare.sh); its setup step installs nginx and oha.
#
#   benches/load.sh [compare.sh options]      e.g. benches/load.sh -c "1 50" -d 10s -r 2
#
# Env: TOLLGATE_BENCH_HARNESS (default ../shared/bench), TOLLGATE_BENCH_PORT (default 18787),
#      TOLLGATE_BENCH_LIMITS (default off: oha sends one key, and one key may not exceed 1000 requests a
#      minute; `benches/limits_load.sh` measures limits on, over many keys).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${TOLLGATE_BENCH_HARNESS:-$ROOT/../shared/bench}"
PORT="${TOLLGATE_BENCH_PORT:-18787}"
[ -x "$HARNESS/setup.sh" ] || { echo "load harness not found at $HARNESS" >&2; exit 1; }

W="$("$HARNESS/setup.sh" | tail -1)"
(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/tollgate"

RUN="$(mktemp -d)"
cat > "$RUN/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
shutdown_grace = "5s"
[store]
path = "$RUN/tollgate.db"
[log]
level = "info"
[limits]
enabled = $( [ "${TOLLGATE_BENCH_LIMITS:-off}" = on ] && echo true || echo false )
[providers.openai]
kind = "openai"
base_url = "http://127.0.0.1:18080"
TOML
KEY="$("$BIN" --config "$RUN/proxy.toml" keys create --name load-bench 2>/dev/null)"
"$BIN" --config "$RUN/proxy.toml" serve 2> "$RUN/tollgate.log" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$RUN"' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done

"$W/mock/mock.sh" start >/dev/null
"$W/compare.sh" -l tollgate -p "$PID" --no-proxy-auth \
  -H "Authorization: Bearer $KEY" -H "X-Provider-Key: sk-mock-provider-key" "$@" \
  "http://127.0.0.1:$PORT/v1"
