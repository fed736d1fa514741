#!/usr/bin/env python3
"""An example endpoint for an organisation's webhook channel (Python standard library only).

It verifies every request's X-Pidgr-Signature as docs/webhooks.md describes — the lowercase hex
HMAC-SHA256 of the raw body, keyed with the whole secret string (`whsec_...`) as UTF-8 bytes,
compared in constant time — before parsing anything. When the request also carries the
Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature), it verifies them
too: the timestamp within 5 minutes of now, and a `v1,` signature (base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}", keyed with the base64 decoding of what follows `whsec_`) that
matches. A request is accepted when every scheme it carries verifies and it carries at least
one. A verified event is printed and answered 204; anything else is answered 401, which Pidgr
retries (1 s, 5 s, 30 s).

    PIDGR_WEBHOOK_SECRET=whsec_... python3 examples/receiver.py [--port 9000]

It listens on loopback only; --port 0 takes any free port. The first line it prints names the
address, so a script can read the port. It knows exactly one secret: after rotating the channel's
secret, restart it with the new one (examples/walkthrough.sh does), or accept both for a while
as docs/webhooks.md explains under "Rotating the secret".
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


# The Standard Webhooks libraries' tolerance: an older (or newer) timestamp is a replay.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60


def verify(raw_body: bytes, signature_header: str | None, secret: str) -> bool:
    expected = hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), (signature_header or "").encode())


def verify_standard(raw_body: bytes, msg_id: str, timestamp: str, signatures: str, secret: str) -> bool:
    try:
        sent_at = int(timestamp)
        key = base64.b64decode(secret.removeprefix("whsec_"))
    except (ValueError, binascii.Error):
        return False
    if abs(time.time() - sent_at) > TIMESTAMP_TOLERANCE_SECONDS:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + raw_body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # Several signatures during a secret rotation's overlap: one matching is enough.
    return any(
        hmac.compare_digest(expected, candidate[len("v1,"):].encode())
        for candidate in signatures.split(" ")
        if candidate.startswith("v1,")
    )


def verified(raw_body: bytes, headers, secret: str) -> bool:
    """Every scheme the request carries must verify, and it must carry one."""
    checks = []
    if headers.get("X-Pidgr-Signature") is not None:
        checks.append(verify(raw_body, headers.get("X-Pidgr-Signature"), secret))
    if headers.get("webhook-signature") is not None:
        checks.append(
            verify_standard(
                raw_body,
                headers.get("webhook-id", ""),
                headers.get("webhook-timestamp", ""),
                headers.get("webhook-signature", ""),
                secret,
            )
        )
    return bool(checks) and all(checks)


def handler_for(secret: str):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not verified(raw, self.headers, secret):
                print("receiver refused an event: bad signature (answered 401)", flush=True)
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(raw)
            print(
                "receiver verified event: user_id={user_id} campaign_id={campaign_id} "
                "occurred_at={occurred_at} deeplink_url={deeplink_url}".format(**event),
                flush=True,
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass  # one line per event above is enough

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")))
    args = parser.parse_args()
    secret = os.environ.get("PIDGR_WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        sys.exit(
            "set PIDGR_WEBHOOK_SECRET to the secret shown when the channel was configured "
            "or its secret rotated (whsec_...)"
        )
    server = HTTPServer(("127.0.0.1", args.port), handler_for(secret))
    print(f"receiver listening on http://127.0.0.1:{server.server_address[1]}/pidgr", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
