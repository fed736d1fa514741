#!/usr/bin/env bash
# `make test`: every test of the workspace. The end-to-end tests start their own Temporal dev
# server from the installed CLI ($PIDGR_TEMPORAL_CLI) on free ports.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "${PIDGR_TEST_POSTGRES_URL:-}" ]; then
  echo "==> PIDGR_TEST_POSTGRES_URL is not set: store tests run on SQLite only (PostgreSQL SKIPPED)"
else
  echo "==> store tests also run on PostgreSQL at ${PIDGR_TEST_POSTGRES_URL%%\?*}"
fi
export PIDGR_BIN="$root/target/debug/pidgr"
cargo test --workspace --no-fail-fast "$@"
