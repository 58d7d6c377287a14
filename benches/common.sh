# Shared by the load scripts in benches/ (sourced, not run). Needs ROOT, and W (the harness work folder)
# before `start_cleanup`.

# A tollgate configuration with limits, metering and metrics on: config PORT STORE UPSTREAM [SERVER_LINE...]
# Metrics are served on PORT + 1 (see metrics_url).
config() {
  local port=$1 store=$2 upstream=$3; shift 3
  # The load comes from one address and holds up to 10,000 streams: caps far above it.
  printf '[server]\nlisten = "127.0.0.1:%s"\nshutdown_grace = "5s"\nmax_connections = 20000\nmax_connections_per_ip = 20000\n' "$port"
  for line in "$@"; do printf '%s\n' "$line"; done
  cat <<TOML
[store]
path = "$store"
[limits]
enabled = true
[plans.default]
tokens_per_month = 1000000000000
[metrics]
enabled = true
listen = "127.0.0.1:$((port + 1))"
[log]
level = "info"
[providers.openai]
kind = "openai"
base_url = "$upstream"
TOML
}

# Processes started by the script, stopped (with the mock) when it exits.
PIDS=()
cleanup() {
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$W/mock/mock.sh" stop >/dev/null 2>&1 || true
}
start_cleanup() { trap cleanup EXIT; }

wait_http() { for _ in $(seq 1 1000); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.01; done; return 1; }
metrics_url() { echo "http://127.0.0.1:$(( $1 + 1 ))/metrics"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# A wrk script that sends each request with the next key of KEYS_FILE: keys_lua KEYS_FILE BODY_FILE
keys_lua() {
  cat <<LUA
local keys, i = {}, 0
for line in io.lines("$1") do keys[#keys + 1] = line end
local f = io.open("$2"); local body = f:read("*a"); f:close()
request = function()
  i = i % #keys + 1
  return wrk.format("POST", "/v1/chat/completions", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. keys[i],
    ["X-Provider-Key"] = "sk-mock-provider-key",
  }, body)
end
LUA
}
