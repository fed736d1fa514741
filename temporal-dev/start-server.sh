#!/usr/bin/env bash
# Starts the Temporal dev server from the CLI `make tools` installed: gRPC on 7233, Web UI on
# 8233, state kept in .data/temporal.db, the project's search attributes registered, and the Web
# UI's codec endpoint when TEMPORAL_UI_CODEC_ENDPOINT is set (dev.sh sets it).
# Runs in the foreground; `dev.sh` starts it in the background and stops it on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cli="${PIDGR_TEMPORAL_CLI:-$root/.tools/py/bin/temporal}"
mkdir -p "$root/.data"
exec "$cli" server start-dev \
  --ip 127.0.0.1 \
  --port "${TEMPORAL_PORT:-7233}" \
  --ui-port "${TEMPORAL_UI_PORT:-8233}" \
  --db-filename "$root/.data/temporal.db" \
  --search-attribute PidgrCampaignId=Keyword \
  --search-attribute PidgrOrganisationId=Keyword \
  --search-attribute PidgrCampaignStatus=Keyword \
  --search-attribute PidgrCampaignName=Keyword \
  ${TEMPORAL_UI_CODEC_ENDPOINT:+--ui-codec-endpoint "$TEMPORAL_UI_CODEC_ENDPOINT"} \
  --log-level warn
