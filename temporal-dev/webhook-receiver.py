#!/usr/bin/env python3
"""A local endpoint for the generic webhook channel, for trying it with `make dev`.

Listens on 127.0.0.1:9000 (or PORT), verifies each event's X-Pidgr-Signature exactly as the
receiver check in docs/webhooks.md does (HMAC-SHA256 of the raw body with the secret, constant-time
comparison), prints the event and answers 204 — or 401 when the signature does not match.

    PIDGR_WEBHOOK_SECRET=whsec_... python3 temporal-dev/webhook-receiver.py
"""
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("PIDGR_WEBHOOK_SECRET", "")
PORT = int(os.environ.get("PORT", "9000"))


def verify(raw_body: bytes, signature_header: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature_header or "")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = verify(raw, self.headers.get("X-Pidgr-Signature", ""), SECRET)
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
