#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing,
# lints the protobuf files, and runs every test of the workspace. The tests
# start their own ClickHouse servers on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --tests

echo "==> buf lint"
buf lint

echo "==> cargo test"
cargo test --workspace --all-targets --locked "$@"
