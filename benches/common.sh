# shellcheck shell=bash
# Shared by the load scripts in benches/ (sourced, not run). Needs ROOT, and W (the harness work folder)
# before `start_cleanup`.

# Installs the harness and its tools (W: its work folder), builds the release binary (BIN) and makes this
# run's results folder (OUT, under target/NAME/): prepare_run NAME
# shellcheck disable=SC2034 # BIN and OUT are for the script that sources this file
prepare_run() {
  W="$("$HARNESS/setup.sh" | tail -1)"
  export PATH="$PATH:$HOME/.cargo/bin"
  (cd "$ROOT" && cargo build --release --quiet)
  BIN="$ROOT/target/release/tollgate"
  OUT="$ROOT/target/$1/$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$OUT"
}

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

# Processes started by the script (PIDS, and any background job still running, such as a sampler of an
# interrupted run), stopped with the mock (unless STOP_MOCK=0) when it exits.
PIDS=()
cleanup() {
  local p left
  left=$(jobs -p)
  for p in "${PIDS[@]+"${PIDS[@]}"}" $left; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${STOP_MOCK:-1}" = 1 ]; then "$W/mock/mock.sh" stop >/dev/null 2>&1 || true; fi
}
# An interrupt or a TERM ends the script (after the command in the foreground), not just that command.
start_cleanup() { trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; }

# wait_http URL [CURL_OPTION...]: until URL answers (any status), for up to about 10 s.
wait_http() {
  local url=$1; shift
  for _ in $(seq 1 1000); do curl -s -o /dev/null --max-time 1 "$@" "$url" && return 0; sleep 0.01; done
  return 1
}
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

# A throwaway CA and a certificate it issued for localhost and 127.0.0.1 (ECDSA P-256), for a TLS upstream:
# tls_assets DIR writes DIR/ca.pem, DIR/server.pem and DIR/server.key (and the CA's key, the request and the
# extensions used).
tls_assets() {
  local d=$1
  mkdir -p "$d"
  printf '%s\n' '[req]' 'distinguished_name = dn' 'prompt = no' 'x509_extensions = ca' '[dn]' \
    'CN = tollgate load-bench CA' '[ca]' 'basicConstraints = critical, CA:TRUE' \
    'keyUsage = critical, keyCertSign, cRLSign' 'subjectKeyIdentifier = hash' > "$d/ca.cnf"
  printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature' \
    'extendedKeyUsage = serverAuth' 'subjectAltName = DNS:localhost, IP:127.0.0.1' \
    'authorityKeyIdentifier = keyid' > "$d/server.ext"
  openssl req -x509 -config "$d/ca.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 7 2> "$d/openssl.log"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/server.key" \
    -subj /CN=localhost -out "$d/server.csr" 2>> "$d/openssl.log"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -set_serial 1 -days 7 \
    -extfile "$d/server.ext" -out "$d/server.pem" 2>> "$d/openssl.log"
}

# The harness's mock behind TLS: its own nginx.conf.in and njs handlers, rendered as mock/mock.sh renders them,
# with the listener on PORT taking TLS (TLS 1.2 and 1.3, ALPN h2 and http/1.1) with the certificate of
# tls_assets. tls_mock_conf PREFIX PORT TLS_DIR writes PREFIX/nginx.conf (run: nginx -p PREFIX/ -c nginx.conf).
tls_mock_conf() {
  local prefix=$1 port=$2 tls=$3 mock="$W/mock"
  local js_module="${NGINX_JS_MODULE:-/usr/lib/nginx/modules/ngx_http_js_module.so}"
  mkdir -p "$prefix/logs" "$prefix/tmp"
  sed -e "s#@MOCK_DIR@#$mock#g" "$mock/dispatch.js.in" > "$prefix/dispatch.js"
  sed -e "s#@MOCK_DIR@/run/dispatch.js#$prefix/dispatch.js#" -e "s#@MOCK_DIR@#$mock#g" \
      -e "s#@MOCK_PORT@#$port#g" -e "s#@MOCK_WORKERS@#${MOCK_WORKERS:-1}#g" \
      -e "s#/usr/lib/nginx/modules/ngx_http_js_module.so#$js_module#" \
      -e "s#listen 127.0.0.1:$port backlog=4096;#listen 127.0.0.1:$port ssl http2 backlog=4096;\\
        ssl_certificate $tls/server.pem;\\
        ssl_certificate_key $tls/server.key;\\
        ssl_protocols TLSv1.2 TLSv1.3;\\
        ssl_session_cache shared:tls_mock:1m;#" \
      "$mock/nginx.conf.in" > "$prefix/nginx.conf"
  if ! grep -q "ssl http2" "$prefix/nginx.conf" \
    || ! grep -q "js_import dispatch from $prefix/dispatch.js" "$prefix/nginx.conf"; then
    echo "the mock's nginx.conf.in no longer has the lines the TLS mock rewrites" >&2; return 1
  fi
}

# The reference nginx proxy with its upstream leg over TLS: the harness's peers/nginx-proxy/nginx.conf with
# listen LISTEN and `proxy_pass https://` to the TLS mock on UPSTREAM_PORT (keep-alive pool as in the
# reference, certificate verified against the CA of tls_assets, sessions reused).
# nginx_https_conf PREFIX LISTEN UPSTREAM_PORT TLS_DIR writes PREFIX/nginx.conf.
nginx_https_conf() {
  local prefix=$1 listen=$2 port=$3 tls=$4
  mkdir -p "$prefix/logs" "$prefix/tmp"
  { echo "# Rendered by benches/load.sh: peers/nginx-proxy/nginx.conf with its upstream leg over TLS."
    sed -e "s#listen 127.0.0.1:18090 #listen 127.0.0.1:$listen #" \
      -e "s#server 127.0.0.1:18080;#server 127.0.0.1:$port;#" \
      -e "s#proxy_set_header Host 127.0.0.1:18080;#proxy_set_header Host 127.0.0.1:$port;#" \
      -e "s#proxy_pass http://openai_mock;#proxy_pass https://openai_mock;\\
            proxy_ssl_protocols TLSv1.2 TLSv1.3;\\
            proxy_ssl_trusted_certificate $tls/ca.pem;\\
            proxy_ssl_verify on;\\
            proxy_ssl_name localhost;\\
            proxy_ssl_session_reuse on;#" \
      "$W/peers/nginx-proxy/nginx.conf"; } > "$prefix/nginx.conf"
  local n
  n=$(grep -c -e "listen 127.0.0.1:$listen " -e "server 127.0.0.1:$port;" -e "Host 127.0.0.1:$port;" \
    -e "proxy_pass https://openai_mock;" "$prefix/nginx.conf")
  [ "$n" = 4 ] \
    || { echo "peers/nginx-proxy/nginx.conf no longer has the lines the https variant rewrites" >&2; return 1; }
}
