"""Forks a grandchild that ignores SIGTERM and sleeps; writes both pids to ``$MARKS`` once the
grandchild is set up; then exits 0 (payload ``"exit"``) or sleeps (``"sleep"``)."""

import json
import os
import signal
import sys
import time

then = json.load(sys.stdin)
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(ready_w, b"x")
    while True:
        time.sleep(60)
os.read(ready_r, 1)
with open(os.environ["MARKS"], "w") as out:
    out.write(f"{os.getpid()} {pid}\n")
if then == "sleep":
    while True:
        time.sleep(60)
print(json.dumps({"left_behind": pid}))
