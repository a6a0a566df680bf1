"""Reads its payload, reports progress (waiting for the test at 40 % when told), answers JSON.

Payload: ``{"doc": ..., "hold": FIFO path or null}``. With ``hold``, after ``PROGRESS: 40`` it
opens that FIFO for reading, which blocks until the test opens it for writing.
"""

import json
import os
import sys

payload = json.load(sys.stdin)
print("PROGRESS: 10 reading", flush=True)
print("starting on", payload["doc"], file=sys.stderr, flush=True)
print("PROGRESS: 40 halfway", flush=True)
if payload.get("hold"):
    with open(payload["hold"]) as go:
        go.read()
print("some output that is not JSON")
print("PROGRESS: 90 writing", flush=True)
print(json.dumps({"a": "JSON line that is not the last one"}))
env = {k: v for k, v in os.environ.items() if k.startswith(("FOREBAY_", "EXTRA"))}
print(json.dumps({"doc": payload["doc"], "env": env, "cwd": os.getcwd(), "ppid": os.getppid()}))
print("done, bye")
