#!/usr/bin/env bash
# forebay's main job on the embedded SQLite default: the Label Studio intake, its workers (the
# handler in one child process: FOREBAY_WORKER_PROCESSES=1) and
# the HTTP API in one service, then a demo that posts the sample Label Studio events to it.
#
#   bash scripts/run.sh              # serve on 127.0.0.1:8000 until Ctrl-C
#   FOREBAY_STAGE_URL=postgresql://user@host/db bash scripts/run.sh   # + Postgres staging tables
#
# Jobs are stored in ./forebay.db, the dataset is written to ./forebay-dataset (with
# FOREBAY_STAGE_URL, the staging tables are created when the service starts). Run again, the
# demo finds its events already in ./forebay.db and says so instead of running them again;
# remove ./forebay.db (and ./forebay-dataset) to start afresh. The demo ends with the row
# counts of the dataset and of the staging tables.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PORT="${FOREBAY_PORT:-8000}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[parquet,pdf,postgres]'

export FOREBAY_LABELSTUDIO_SECRET="${FOREBAY_LABELSTUDIO_SECRET:-change-me}"
FOREBAY_WORKER_PROCESSES="${FOREBAY_WORKER_PROCESSES:-1}" \
    .venv/bin/forebay serve forebay.contrib.labelstudio:app --port "$PORT" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"' EXIT INT TERM

for _ in $(seq 1 100); do      # wait (at most ~20 s) until the service answers
    if .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { echo "forebay serve exited; see the lines above" >&2; exit 1; }
    sleep 0.2
done

.venv/bin/forebay labelstudio demo --service "http://127.0.0.1:$PORT"
.venv/bin/forebay stats
cat <<TXT

forebay is serving on http://127.0.0.1:$PORT (Ctrl-C stops it):
  dashboard     http://127.0.0.1:$PORT/
  API docs      http://127.0.0.1:$PORT/docs
  queues        curl http://127.0.0.1:$PORT/v1/queues
  metrics       curl http://127.0.0.1:$PORT/metrics
  dataset       ./forebay-dataset (parquet shards, Hugging Face layout)
  webhook       point Label Studio at http://<this host>:$PORT/v1/sources/labelstudio
                with the header X-Forebay-Secret: \$FOREBAY_LABELSTUDIO_SECRET (docs/labelstudio.md)
TXT
wait "$server"
