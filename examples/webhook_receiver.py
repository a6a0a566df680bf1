"""A webhook receiver: verifies forebay's signature, then takes each delivery once.

It needs only the standard library and ``pip install standardwebhooks``, so it runs wherever
your receiver does. Give it the secret your workers sign with, and a port::

    FOREBAY_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py 8000

It answers 204 to a delivery whose signature is right and fresh (within five minutes), 400
to anything else, and prints one line per event it takes: its ``webhook-id``, type and data.
A delivery it took before (the same ``webhook-id``: forebay retried after a lost answer) is
answered 204 again and not taken twice. Port 0 picks a free port; the first line printed says
where it listens.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1_048_576


def verify(secret: str, body: bytes, headers: dict[str, str]) -> dict[str, object]:
    """The event a delivery carries, once its signature is checked; raises
    WebhookVerificationError for a wrong, missing or stale signature."""
    event: dict[str, object] = Webhook(secret).verify(body, headers)
    return event


class Receiver(BaseHTTPRequestHandler):
    secret = ""
    taken: set[str] = set()  # webhook-ids already processed (keep them in your database)
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self.answer(413)
            return
        body = self.rfile.read(length)
        try:
            event = verify(self.secret, body, dict(self.headers))
        except WebhookVerificationError:
            self.answer(400)
            return
        msg_id = self.headers["webhook-id"]
        with self.lock:
            new = msg_id not in self.taken
            self.taken.add(msg_id)
        if new:
            print(msg_id, event["type"], json.dumps(event["data"], sort_keys=True), flush=True)
        self.answer(204)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # one line per event is enough
        pass


def main() -> None:
    Receiver.secret = os.environ["FOREBAY_WEBHOOK_SECRET"]
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
