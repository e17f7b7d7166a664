#!/usr/bin/env bash
# Installs what livehead needs on this machine when it is missing:
#   always:      clickhouse-server and clickhouse-client (Debian packages)
#   with --tests: buf (npm @bufbuild/buf), chdb (PyPI), the sqlite3 shell,
#                 zookeeper, podman, runc, chromium and chromium-driver (Debian
#                 packages), used by the tests
#   with --bench: what bench/run compares livehead with and measures by (Debian
#                 packages): nginx-light, curl, wrk, prometheus-node-exporter, time
set -euo pipefail

log() { printf '==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v clickhouse-server >/dev/null && [ ! -x /usr/sbin/clickhouse-server ]; then
  log "installing clickhouse-server (Debian package)"
  apt_install clickhouse-server
fi
if ! command -v clickhouse-client >/dev/null; then
  log "installing clickhouse-client (Debian package)"
  apt_install clickhouse-client
fi

if [ "${1:-}" = "--tests" ]; then
  if ! command -v buf >/dev/null; then
    log "installing buf (npm @bufbuild/buf)"
    as_root npm install -g --no-fund --no-audit @bufbuild/buf >/dev/null
  fi
  if ! python3 -c 'import chdb' 2>/dev/null; then
    log "installing chdb (PyPI): a current ClickHouse engine to check the newer-server schema"
    python3 -m pip install --quiet chdb
  fi
  if ! command -v sqlite3 >/dev/null; then
    log "installing sqlite3 (Debian package): runs the old D1 queries on the embedded store"
    apt_install sqlite3
  fi
  if [ ! -f /usr/share/java/zookeeper.jar ]; then
    log "installing zookeeper (Debian package): the ClickHouse cluster tests' coordination"
    apt_install zookeeper
  fi
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    log "installing podman and runc (Debian packages): build and run the container images"
    apt_install podman runc
  fi
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    log "installing chromium and chromium-driver (Debian packages): the dashboard's browser tests"
    apt_install chromium chromium-driver
  fi
fi

if [ "${1:-}" = "--bench" ]; then
  missing=()
  [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v curl >/dev/null || missing+=(curl)
  command -v wrk >/dev/null || missing+=(wrk)
  [ -x /usr/bin/prometheus-node-exporter ] || missing+=(prometheus-node-exporter)
  [ -x /usr/bin/time ] || missing+=(time)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages) for the benchmarks"
    apt_install "${missing[@]}"
  fi
fi
