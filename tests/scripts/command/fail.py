"""Writes 3000 characters to stderr (its last line says so), then exits with the status given."""

import json
import sys

status = json.load(sys.stdin)
sys.stderr.write("early line that falls out of the tail\n")
sys.stderr.write("." * 3000 + "\n")
sys.stderr.write(f"the last line: exiting with {status}\n")
sys.exit(status)
