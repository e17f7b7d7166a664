#!/usr/bin/env bash
# Runs livehead on this machine with ClickHouse as the store (`livehead up` is
# the same on the embedded SQLite store): a private ClickHouse server, a collector and
# one agent, all on loopback, with state (data, certificates, logs) under
# $LIVEHEAD_STATE (default ./.livehead-clickhouse). Ctrl-C stops everything.
#
#   scripts/run-local.sh SITES            SITES: a list file (host names or URLs)
#                                          or a web root (one directory per site)
#   LIVEHEAD_TARGET=10.0.0.7:8080 scripts/run-local.sh /mnt/www
#                                          probe every site at that address with
#                                          the site in the Host header (default:
#                                          each site directly at https://<site>/)
set -euo pipefail
cd "$(dirname "$0")/.."

sites=${1:?usage: scripts/run-local.sh SITES_FILE_OR_WEB_ROOT}
state=$(realpath -m "${LIVEHEAD_STATE:-.livehead-clickhouse}")
ch_http=${LIVEHEAD_CH_HTTP_PORT:-18123}
ch_tcp=${LIVEHEAD_CH_TCP_PORT:-19000}
grpc=${LIVEHEAD_GRPC_PORT:-7070}
http=${LIVEHEAD_HTTP_PORT:-7080}

bash scripts/install-deps.sh
cargo build --release --locked
bin=target/release/livehead
ch_server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)

mkdir -p "$state/clickhouse"
cat > "$state/clickhouse/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$state/clickhouse/server.log</log><errorlog>$state/clickhouse/server.err.log</errorlog></logger>
  <http_port>$ch_http</http_port>
  <tcp_port>$ch_tcp</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <mark_cache_size>67108864</mark_cache_size>
  <path>$state/clickhouse/data/</path>
  <tmp_path>$state/clickhouse/tmp/</tmp_path>
  <user_files_path>$state/clickhouse/user_files/</user_files_path>
  <users_config>$state/clickhouse/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
cat > "$state/clickhouse/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
  <profiles><default/></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default/></quotas>
</yandex>
XML

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$ch_server" --config-file="$state/clickhouse/config.xml" >"$state/clickhouse/stdout.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  clickhouse-client --port "$ch_tcp" --query 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done

[ -f "$state/certs/ca.pem" ] || "$bin" certs --out "$state/certs" --agent local-agent >/dev/null
"$bin" collector --grpc-listen "127.0.0.1:$grpc" --http-listen "127.0.0.1:$http" \
  --clickhouse-url "http://127.0.0.1:$ch_http" \
  --tls-ca "$state/certs/ca.pem" --tls-cert "$state/certs/collector.pem" --tls-key "$state/certs/collector-key.pem" \
  2>>"$state/collector.log" &
pids+=($!)

if [ -d "$sites" ]; then source_flag=(--web-root "$sites"); else source_flag=(--sites-file "$sites"); fi
target_flag=()
[ -z "${LIVEHEAD_TARGET:-}" ] || target_flag=(--target "$LIVEHEAD_TARGET")
"$bin" agent --collector-url "https://127.0.0.1:$grpc" "${source_flag[@]}" "${target_flag[@]}" \
  --interval "${LIVEHEAD_INTERVAL:-60s}" --metrics-listen 127.0.0.1:7091 \
  --tls-ca "$state/certs/ca.pem" --tls-cert "$state/certs/agent-local-agent.pem" --tls-key "$state/certs/agent-local-agent-key.pem" \
  2>>"$state/agent.log" &
pids+=($!)

cat <<TXT
livehead is running (logs in $state/*.log):
  API:               curl -s 'http://127.0.0.1:$http/dump_last?limit=20'
  collector metrics: curl -s http://127.0.0.1:$http/metrics | grep livehead_collector_rows
  agent metrics:     curl -s http://127.0.0.1:7091/metrics | grep livehead_agent_probes
  latest state:      clickhouse-client --port $ch_tcp --database livehead \\
                       --query 'SELECT site, status, ms, location, \`cross\`, ts FROM health_last FINAL ORDER BY ts DESC LIMIT 20'
Ctrl-C stops it.
TXT
wait -n "${pids[@]}"
