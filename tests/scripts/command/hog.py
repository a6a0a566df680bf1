"""Allocates under a memory limit until the limit is hit, then is killed as the kernel's OOM
killer would kill it.

``RLIMIT_AS`` makes an allocation past it fail (MemoryError) rather than kill the process: only
the OOM killer (a cgroup's or the machine's memory running out) kills, and tests cannot count
on having one. So the limit is real, and the kill that follows it is the OOM killer's SIGKILL,
sent by the program to itself.
"""

import os
import resource
import signal
import sys

try:  # what the interpreter already maps, so the limit leaves it 64 MiB to allocate
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
except OSError:
    mapped = 192 * 1024 * 1024
limit = mapped + 64 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
hoard = []
try:
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))
except MemoryError:
    del hoard
    print(f"out of memory under RLIMIT_AS={limit}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
