"""Prints ``stdout_mb`` MB to stdout and ``stderr_mb`` MB to stderr in 1 KiB lines, then a JSON
result: far more than any cap."""

import json
import sys

payload = json.load(sys.stdin)
line = b"x" * 1023 + b"\n"
block = line * 1024  # 1 MiB
for i in range(max(payload["stdout_mb"], payload["stderr_mb"])):
    if i < payload["stdout_mb"]:
        sys.stdout.buffer.write(block)
    if i < payload["stderr_mb"]:
        sys.stderr.buffer.write(block)
sys.stdout.buffer.write(b"PROGRESS: 99 flooded\n")
sys.stderr.buffer.write(b"the end of stderr\n")
sys.stdout.buffer.write(json.dumps({"flooded": payload["stdout_mb"]}).encode() + b"\n")
