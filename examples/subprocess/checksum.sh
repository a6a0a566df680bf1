#!/bin/sh
# Checksum one payload: a shell program run by the `checksums` command queue (app.py).
# The payload arrives on stdin as JSON; the last line printed that is JSON is the result.
set -eu
payload=$(cat)
echo "PROGRESS: 50 hashing"
sum=$(printf '%s' "$payload" | cksum | cut -d ' ' -f 1)
echo "job $FOREBAY_JOB_ID on queue $FOREBAY_QUEUE" >&2
printf '{"cksum": %s, "bytes": %s}\n' "$sum" "$(printf '%s' "$payload" | wc -c | tr -d ' ')"
