#!/usr/bin/env bash
# A tour of Pidgr's API, from an empty directory to a finished campaign, with curl.
#
#   make dev                                  # in one terminal; it prints the API key
#   PIDGR_KEY=<that key> examples/walkthrough.sh
#
# It creates two members with phones, a team, a template, a saved workflow definition and a
# campaign for the team; it configures the organisation's webhook channel to point at
# examples/receiver.py (started here, on loopback), runs the campaign (Ada reads and
# acknowledges, Alan is reminded by push and webhook, then missed), shows the status and the
# activity log, and finally rotates the webhook secret and restarts the receiver with the new
# one. Every name carries a suffix of its own, so it can run again and again on one
# organisation. It stops at the first answer it did not expect and prints the request, the
# status and the problem.
#
# Environment:
#   PIDGR_API            the API (default http://127.0.0.1:8080)
#   PIDGR_KEY            an API key of a role with every permission (make dev prints one)
#   PIDGR_RECEIVER_PORT  the example receiver's loopback port (default: a free one); the server
#                        must allow loopback webhooks (make dev does: PIDGR_ALLOW_INSECURE_WEBHOOKS)
#   Optional, to push through the local provider fakes (`cargo run -p pidgr-push-fakes`) instead
#   of the `log` provider; the server must be started with PIDGR_FCM_URL, PIDGR_FCM_TOKEN_URL and
#   PIDGR_APNS_URL pointing at them:
#   PIDGR_FAKE_FCM_URL   the fake FCM's address: saves a sample service account (the test key
#                        in push-fakes/, project pidgr-bench) as the organisation's FCM credentials
#   PIDGR_FAKE_APNS_URL  the fake APNs's address, with PIDGR_FAKE_APNS_KEY, the .p8 file of the key
#                        it verifies with: saves sample APNs credentials (team TEAM123456, key
#                        KEY1234567, bundle com.pidgr.bench)
#
# Needs only bash, curl and python3 (for JSON).
set -euo pipefail

API="${PIDGR_API:-http://127.0.0.1:8080}"
if [ -z "${PIDGR_KEY:-}" ]; then
  echo "PIDGR_KEY is not set: run \`make dev\` and export the API key it prints" \
    "(export PIDGR_KEY=...), or make one with \`pidgr key create\`." >&2
  exit 2
fi
KEY="$PIDGR_KEY"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="$(mktemp -d)"
RUN="$(date +%H%M%S)-$(python3 -c 'import secrets; print(secrets.token_hex(3))')"
RECEIVER_PID=""

cleanup() {
  if [ -n "$RECEIVER_PID" ]; then
    kill "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

# call EXPECTED METHOD PATH [JSON]: one request; EXPECTED is a status or a comma-separated list
# of them. The answer's body lands in $BODY and its status in $STATUS; any other status stops
# the script with the request, the status and the problem. Extra headers: HEADER='Name: value'.
call() {
  local expected="$1" method="$2" path="$3" data="${4-}"
  local args=(-sS -o "$work/body" -w '%{http_code}' -X "$method"
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')
  if [ -n "${HEADER:-}" ]; then args+=(-H "$HEADER"); fi
  if [ -n "$data" ]; then args+=(--data-binary "$data"); fi
  if ! STATUS="$(curl "${args[@]}" "$API$path")"; then
    echo "FAILED: $method $API$path: could not reach the API (is \`make dev\` running?)" >&2
    exit 1
  fi
  BODY="$(cat "$work/body")"
  if [[ ",$expected," != *",$STATUS,"* ]]; then
    {
      echo "FAILED: $method $API$path"
      if [ -n "$data" ]; then
        case "$path" in
          /v1/integrations/*) echo "request body: (credentials, not shown)" ;;
          *) echo "request body: $data" ;;
        esac
      fi
      echo "expected status $expected, got $STATUS"
      echo "answer: $BODY"
    } >&2
    exit 1
  fi
}

# field PATH: a value of $BODY, by a dotted path (`id`, `items.0.delivery.id`); strings bare,
# anything else as JSON.
field() {
  python3 -c '
import json, sys
value = json.loads(sys.stdin.read())
for part in filter(None, sys.argv[1].split(".")):
    try:
        value = value[int(part)] if isinstance(value, list) else value[part]
    except (KeyError, IndexError, ValueError, TypeError):
        sys.exit(f"no {sys.argv[1]!r} in the answer: {json.dumps(value)[:500]}")
print(value if isinstance(value, str) else json.dumps(value))
' "$1" <<<"$BODY"
}

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every half second until it succeeds; gives up
# (and stops the script) after SECONDS.
wait_for() {
  local what="$1" limit="$2"
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "FAILED: gave up after ${limit}s waiting for $what" >&2
      exit 1
    fi
    sleep 0.5
  done
}

# json OBJECT-BUILDING PYTHON EXPRESSION with NAME=VALUE arguments: safe quoting for bodies.
json() {
  local expression="$1"
  shift
  python3 -c '
import json, sys
v = dict(arg.split("=", 1) for arg in sys.argv[2:])
print(json.dumps(eval(sys.argv[1], {"v": v})))
' "$expression" "$@"
}

start_receiver() { # SECRET
  : >"$work/receiver.log"
  PIDGR_WEBHOOK_SECRET="$1" python3 "$here/receiver.py" --port "$RECEIVER_PORT" \
    >"$work/receiver.log" 2>&1 &
  RECEIVER_PID=$!
  wait_for "the example receiver to listen" 10 grep -q "receiver listening" "$work/receiver.log"
  sed 's/^/  /' "$work/receiver.log"
}

stop_receiver() {
  kill "$RECEIVER_PID"
  wait "$RECEIVER_PID" 2>/dev/null || true
  RECEIVER_PID=""
}

step "who this key is ($API)"
call 200 GET /v1/organisation
echo "organisation \"$(field name)\" as role $(field api_key.role_id); this run's names end in $RUN"

step "the webhook channel, and an example receiver that verifies its signatures"
RECEIVER_PORT="${PIDGR_RECEIVER_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
RECEIVER_URL="http://127.0.0.1:$RECEIVER_PORT/pidgr"
call 201,200 PUT /v1/webhook-channel "$(json '{"url": v["url"], "timeout_ms": 2000}' url="$RECEIVER_URL")"
if [ "$STATUS" = 201 ]; then
  SECRET="$(field secret)" # shown this once
  echo "channel created for $RECEIVER_URL; its secret was shown once and goes to the receiver"
else
  # The organisation already had a channel, whose secret was shown once, long ago: a new one.
  call 200 POST /v1/webhook-channel/rotate-secret
  SECRET="$(field secret)"
  echo "channel pointed at $RECEIVER_URL; secret rotated to give the receiver one"
fi
start_receiver "$SECRET"

step "the directory: two members in a team, with their phones"
call 201 POST /v1/members "$(json '{"external_id": v["id"], "email": v["email"], "display_name": "Ada",
  "attributes": {"site": "Leeds"}}' id="e-100-$RUN" email="ada-$RUN@acme.test")"
ADA="$(field id)"
call 201 POST /v1/members "$(json '{"external_id": v["id"], "email": v["email"], "display_name": "Alan",
  "attributes": {"site": "York"}}' id="e-101-$RUN" email="alan-$RUN@acme.test")"
ALAN="$(field id)"
call 201 POST /v1/teams "$(json '{"name": v["name"]}' name="Operations $RUN")"
TEAM="$(field id)"
call 201 PUT "/v1/teams/$TEAM/members/$ADA"
call 201 PUT "/v1/teams/$TEAM/members/$ALAN"
# As the mobile backend registers them. Without push credentials (make dev) the `log` provider
# records each push instead of sending it.
call 201 POST "/v1/members/$ADA/devices" "$(json '{"platform": "fcm", "token": v["t"]}' t="ada-phone-$RUN")"
call 201 POST "/v1/members/$ALAN/devices" "$(json '{"platform": "apns", "token": v["t"]}' t="alan-phone-$RUN")"
echo "Ada $ADA and Alan $ALAN in team $TEAM, each with a phone"

if [ -n "${PIDGR_FAKE_FCM_URL:-}" ] || [ -n "${PIDGR_FAKE_APNS_URL:-}" ]; then
  step "push credentials for the local provider fakes"
  if [ -n "${PIDGR_FAKE_FCM_URL:-}" ]; then
    curl -sS -o /dev/null "$PIDGR_FAKE_FCM_URL" ||
      { echo "FAILED: the fake FCM at $PIDGR_FAKE_FCM_URL does not answer" >&2; exit 1; }
    # A service-account file as Google issues them, around the test key the fakes verify with.
    call 200 PUT /v1/integrations/push/fcm "$(python3 -c '
import json, sys
pem = open(sys.argv[1]).read()
print(json.dumps({"service_account": {
    "type": "service_account", "project_id": "pidgr-bench",
    "private_key_id": "0123456789abcdef0123456789abcdef01234567",
    "private_key": pem[pem.index("-----BEGIN"):],
    "client_email": "pidgr@pidgr-bench.iam.gserviceaccount.com",
    "client_id": "100000000000000000000",
    "token_uri": "https://oauth2.googleapis.com/token"}}))
' "$root/push-fakes/src/test-service-account-key.pem")"
    echo "FCM: sample service account saved (the server sends to PIDGR_FCM_URL, the fake at $PIDGR_FAKE_FCM_URL)"
  fi
  if [ -n "${PIDGR_FAKE_APNS_URL:-}" ]; then
    : "${PIDGR_FAKE_APNS_KEY:?PIDGR_FAKE_APNS_URL needs PIDGR_FAKE_APNS_KEY, the .p8 file of the fake APNs key}"
    curl -sS -o /dev/null --http2-prior-knowledge "$PIDGR_FAKE_APNS_URL" ||
      { echo "FAILED: the fake APNs at $PIDGR_FAKE_APNS_URL does not answer" >&2; exit 1; }
    call 200 PUT /v1/integrations/push/apns "$(python3 -c '
import json, sys
print(json.dumps({"team_id": "TEAM123456", "key_id": "KEY1234567", "bundle_id": "com.pidgr.bench",
                  "environment": "production", "private_key": open(sys.argv[1]).read()}))
' "$PIDGR_FAKE_APNS_KEY")"
    echo "APNs: sample key saved (the server sends to PIDGR_APNS_URL, the fake at $PIDGR_FAKE_APNS_URL)"
  fi
  call 200 GET /v1/integrations/push
  echo "configured: $BODY"
fi

step "a template; its first version previewed for Ada"
call 201 POST /v1/templates "$(json '{"name": v["name"], "title": "Fire drill in {{site}}",
  "body": "Hello {{name}}, please meet at **{{place}}** by {{deadline}}."}' name="Fire drill $RUN")"
TEMPLATE="$(field id)"
call 200 POST "/v1/templates/$TEMPLATE/versions/1/preview" "$(json '{"member_id": v["m"]}' m="$ADA")"
echo "template $TEMPLATE, version 1, for Ada: $(field rendered.title)"

step "a workflow definition: notify, wait, remind by push and webhook, wait, mark the rest missed"
# Seconds here so the tour ends quickly; a real drill would wait hours or days.
call 201 POST /v1/workflow-definitions "$(json '{"name": v["name"], "definition": {"version": 1, "start": "notify", "steps": [
  {"id": "notify", "type": "SEND_NOTIFICATION",
   "config": {"variables": {"place": "the car park", "deadline": "Friday"}},
   "transitions": {"next": "wait"}},
  {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "8s"},
   "transitions": {"deadline": "remind", "all_acknowledged": "done"}},
  {"id": "remind", "type": "SEND_REMINDER",
   "config": {"channels": ["push", "webhook"], "variables": {"place": "the car park", "deadline": "today"}},
   "transitions": {"next": "last-call"}},
  {"id": "last-call", "type": "DEADLINE_CHECK", "config": {"duration": "4s"},
   "transitions": {"next": "done"}},
  {"id": "done", "type": "MARK_MISSED"}]}}' name="Drill with a reminder $RUN")"
DEFINITION="$(field id)"
echo "definition $DEFINITION"

step "a campaign for the team (Alan gets his own meeting point), previewed, then started"
HEADER="Idempotency-Key: drill-$RUN" call 201 POST /v1/campaigns "$(json '{"name": v["name"],
  "title": "Fire drill", "template_id": v["template"], "definition_id": v["definition"],
  "audience": {"teams": [v["team"]],
               "members": [{"member_id": v["alan"], "variables": {"place": "the side gate"}}]}}' \
  name="Drill $RUN" template="$TEMPLATE" definition="$DEFINITION" team="$TEAM" alan="$ALAN")"
CAMPAIGN="$(field id)"
echo "campaign created: $CAMPAIGN"
call 200 GET "/v1/campaigns/$CAMPAIGN/preview"
echo "preview: $BODY" | cut -c1-300
call 202 POST "/v1/campaigns/$CAMPAIGN/start"
echo "started: the Temporal workflow campaign-$CAMPAIGN writes one delivery per recipient"

step "the mobile backend: Ada's inbox, READ, then ACK"
inbox_has_the_drill() {
  call 200 GET "/v1/members/$ADA/inbox"
  [ "$(field items)" != "[]" ]
}
wait_for "Ada's delivery in her inbox" 60 inbox_has_the_drill
DELIVERY="$(field items.0.delivery.id)"
echo "inbox: \"$(field items.0.message.title)\" (delivery $DELIVERY)"
call 200 POST "/v1/deliveries/$DELIVERY/read" '{"source": "inbox"}'
call 200 POST "/v1/deliveries/$DELIVERY/ack" '{"source": "inbox"}'
echo "Ada: $(field status)"

step "Alan is reminded by push and through the webhook channel"
wait_for "the receiver to verify Alan's reminder event" 90 \
  grep -q "receiver verified event: user_id=e-101-$RUN campaign_id=$CAMPAIGN" "$work/receiver.log"
grep "receiver verified event" "$work/receiver.log" | sed 's/^/  /'

step "status: the campaign runs to its end"
campaign_is_completed() {
  call 200 GET "/v1/campaigns/$CAMPAIGN"
  [ "$(field status)" = COMPLETED ]
}
wait_for "the campaign to complete" 90 campaign_is_completed
echo "campaign COMPLETED: $(field counts)"
[ "$(field counts.acknowledged)" = 1 ] && [ "$(field counts.missed)" = 1 ] ||
  { echo "FAILED: expected Ada ACKNOWLEDGED and Alan MISSED: $BODY" >&2; exit 1; }

step "the activity log tells the story"
call 200 GET "/v1/campaigns/$CAMPAIGN/activity"
python3 -c '
import json, sys
for entry in json.load(sys.stdin)["items"]:
    print("  {} {:<22} {:<10} {}".format(entry["occurred_at"][11:19], entry["kind"],
          entry.get("step_id") or "", entry.get("message") or ""))
' <<<"$BODY"

step "rotating the webhook secret (the receiver must learn the new one)"
call 200 POST /v1/webhook-channel/rotate-secret
SECRET="$(field secret)"
call 200 POST /v1/webhook-channel/test-event
if [ "$(field delivered)" != false ] || [ "$(field status)" != 401 ]; then
  echo "FAILED: the receiver still holding the old secret should answer 401: $BODY" >&2
  exit 1
fi
echo "rotated: the receiver with the old secret refused the next event (401), as it must"
stop_receiver
start_receiver "$SECRET"
call 200 POST /v1/webhook-channel/test-event
if [ "$(field delivered)" != true ]; then
  echo "FAILED: the restarted receiver did not accept the test event: $BODY" >&2
  exit 1
fi
grep -q "receiver verified event: user_id=test-" "$work/receiver.log" ||
  { echo "FAILED: the receiver did not print the test event" >&2; exit 1; }
grep "receiver verified event" "$work/receiver.log" | sed 's/^/  /'
echo "rotated: receiver verified test event with the new secret"

printf '\nwalkthrough finished in %ss (campaign %s)\n' "$SECONDS" "$CAMPAIGN"
