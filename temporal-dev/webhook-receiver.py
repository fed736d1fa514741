#!/usr/bin/env python3
"""A local endpoint for the generic webhook channel, for trying it with `make dev`.

Listens on 127.0.0.1:9000 (or PORT), verifies each event's X-Pidgr-Signature exactly as the
receiver check in docs/webhooks.md does (HMAC-SHA256 of the raw body with the secret, constant-time
comparison) and, when the request carries them, the Standard Webhooks headers (a `v1,` base64
HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}" keyed with the base64 decoding of what
follows `whsec_`, the timestamp within 5 minutes), prints the event and answers 204 — or 401
when a signature it carries does not match.

    PIDGR_WEBHOOK_SECRET=whsec_... python3 temporal-dev/webhook-receiver.py
"""
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("PIDGR_WEBHOOK_SECRET", "")
PORT = int(os.environ.get("PORT", "9000"))


def verify(raw_body: bytes, signature_header: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature_header or "")


def verify_standard(raw_body: bytes, headers, secret: str) -> bool:
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        if abs(time.time() - int(stamp)) > 300:
            return False
    except (ValueError, binascii.Error):
        return False
    signed = f"{msg_id}.{stamp}.".encode() + raw_body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, sig[3:])
        for sig in headers.get("webhook-signature", "").split(" ")
        if sig.startswith("v1,")
    )


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        checks = []
        if self.headers.get("X-Pidgr-Signature") is not None:
            checks.append(verify(raw, self.headers["X-Pidgr-Signature"], SECRET))
        if self.headers.get("webhook-signature") is not None:
            checks.append(verify_standard(raw, self.headers, SECRET))
        ok = bool(checks) and all(checks)
        print(("verified " if ok else "BAD SIGNATURE ") + raw.decode(errors="replace"), flush=True)
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if not SECRET:
        sys.exit("set PIDGR_WEBHOOK_SECRET to the secret shown when the channel was configured")
    print(f"listening on http://127.0.0.1:{PORT}/pidgr", flush=True)
    HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
