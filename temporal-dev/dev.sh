#!/usr/bin/env bash
# `make dev`: the whole system on one machine. Ctrl-C stops everything this script started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cli="${PIDGR_TEMPORAL_CLI:-$root/.tools/py/bin/temporal}"
pidgr="$root/target/debug/pidgr"
# Every pidgr process needs an explicit environment; this script is the development one.
export PIDGR_ENVIRONMENT=development
export DATABASE_URL="${DATABASE_URL:-sqlite://$root/.data/pidgr.db}"
export PIDGR_LISTEN="${PIDGR_LISTEN:-127.0.0.1:8080}"
export PIDGR_ALLOW_INSECURE_WEBHOOKS="${PIDGR_ALLOW_INSECURE_WEBHOOKS:-true}"
# No push credentials in development: pushes to devices are recorded by the `log` provider.
export PIDGR_PUSH_LOG="${PIDGR_PUSH_LOG:-true}"
export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:${TEMPORAL_PORT:-7233}}"
# The console links each campaign to its run in the Web UI.
export PIDGR_TEMPORAL_UI_URL="${PIDGR_TEMPORAL_UI_URL:-http://127.0.0.1:${TEMPORAL_UI_PORT:-8233}}"
mkdir -p .data
# Stored secrets (webhook signing secrets) are encrypted with this key; keep it with the data.
if [ -z "${PIDGR_SECRET_KEY:-}" ]; then
  [ -s .data/secret.key ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > .data/secret.key
  PIDGR_SECRET_KEY="$(cat .data/secret.key)"
fi
export PIDGR_SECRET_KEY
# The operator's token for the API's codec server (it decrypts every organisation's Temporal
# payloads, so no API key opens it); kept with the data, like the secret key.
if [ -z "${PIDGR_CODEC_TOKEN:-}" ]; then
  [ -s .data/codec.token ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > .data/codec.token
  PIDGR_CODEC_TOKEN="$(cat .data/codec.token)"
fi
export PIDGR_CODEC_TOKEN

children=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap cleanup EXIT INT TERM

echo "==> migrating $DATABASE_URL"
"$pidgr" migrate
# The same Development key on every run (kept in .data/dev.key while it still works).
key="$("$pidgr" dev-key --key-file .data/dev.key)"
# Temporal sees only encrypted payloads; the Web UI reads them in clear through the API's codec
# server, with the codec token in the path (the UI sends no header of ours). Development only:
# the UI hands its configured endpoint to whoever opens it.
export TEMPORAL_UI_CODEC_ENDPOINT="http://$PIDGR_LISTEN/codec/key/$PIDGR_CODEC_TOKEN"

echo "==> starting the Temporal dev server (log: .data/temporal.log)"
./temporal-dev/start-server.sh > .data/temporal.log 2>&1 &
children+=($!)
for _ in $(seq 1 120); do
  if "$cli" operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${children[0]}" 2>/dev/null; then
    echo "the Temporal dev server exited; see .data/temporal.log" >&2; exit 1
  fi
  sleep 0.5
done
"$cli" operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null

cat <<INFO

  Console     http://$PIDGR_LISTEN/console/   (sign in with the API key below)
  API         http://$PIDGR_LISTEN
  Web UI      $PIDGR_TEMPORAL_UI_URL
  API key     $key
              export PIDGR_KEY=$key
  Temporal    payloads are encrypted; the Web UI decodes them through http://$PIDGR_LISTEN/codec,
              and so does the temporal CLI with:
              export TEMPORAL_CODEC_ENDPOINT=http://$PIDGR_LISTEN/codec TEMPORAL_CODEC_AUTH="Bearer $PIDGR_CODEC_TOKEN"
              (the operator's codec token, in .data/codec.token; no API key opens the codec server)

  Ctrl-C stops the API, the worker and the dev server.

INFO
"$pidgr" serve &
children+=($!)
wait -n "${children[@]}"
