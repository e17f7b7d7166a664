#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing
# (ClickHouse from Debian's packages, buf from npm, chdb from PyPI), lints the
# protobuf files, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v clickhouse-server >/dev/null && [ ! -x /usr/sbin/clickhouse-server ]; then
  log "installing clickhouse-server and clickhouse-client (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
if ! command -v clickhouse-client >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-client >/dev/null
fi
if ! command -v buf >/dev/null; then
  log "installing buf (npm @bufbuild/buf)"
  as_root npm install -g --no-fund --no-audit @bufbuild/buf >/dev/null
fi
if ! python3 -c 'import chdb' 2>/dev/null; then
  log "installing chdb (PyPI) to check the schema against a current ClickHouse engine"
  python3 -m pip install --quiet chdb
fi

log "buf lint"
buf lint

log "cargo test"
cargo test --workspace --all-targets --locked "$@"
