"""Ignores SIGTERM (noting that it got one in ``$MARKS``), says it is ready, then sleeps."""

import os
import signal
import sys
import time

marks = os.environ["MARKS"]


def refuse(signum: int, frame: object) -> None:
    with open(marks, "a") as out:
        out.write("SIGTERM ignored\n")


signal.signal(signal.SIGTERM, refuse)
with open(marks, "a") as out:
    out.write(f"ready {os.getpid()}\n")
print("sleeping past the timeout", file=sys.stderr, flush=True)
while True:
    time.sleep(60)
