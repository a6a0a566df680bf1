"""Count the words of one document: a program run by the ``words`` command queue (app.py).

Reads the job's payload on stdin, reports progress on stdout, and prints its result as the
last JSON line. An empty document can never succeed: it exits 3, a permanent exit code there.
"""

import json
import os
import sys

payload = json.load(sys.stdin)
text = payload["text"]
if not text.strip():
    print(f"document {payload['name']!r} is empty", file=sys.stderr)
    sys.exit(3)

print(f"PROGRESS: 10 read {len(text)} characters", flush=True)
words = text.split()
print("PROGRESS: 90 counted", flush=True)
job, attempt = os.environ["FOREBAY_JOB_ID"], os.environ["FOREBAY_ATTEMPT"]
print(f"job {job}, attempt {attempt}: {len(words)} words", file=sys.stderr)
print(json.dumps({"name": payload["name"], "words": len(words)}))
