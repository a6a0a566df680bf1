"""``forebay serve`` on SQLite when the input or the file itself is at fault.

* a key with a NUL character is a 400 naming the key, as on the other backends;
* the database file deleted while the service runs: every write from then on would land in a
  file no one can open again and be lost at the next start, so the service answers 503 to
  writes and to ``/readyz``, and logs one error (no traceback), instead of acknowledging.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.acceptance.test_serve import serve, wait_until


def test_a_nul_character_in_a_key_is_a_400(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        posted = httpx.post(
            f"{server.base}/v1/queues/intake/jobs", json={"payload": {}, "key": "a\u0000b"}
        )
        assert posted.status_code == 400, posted.text
        assert "NUL" in posted.json()["error"]["message"]
        queues = httpx.get(f"{server.base}/v1/queues").json()["queues"]
        assert sum(q["queued"] for q in queues) == 0  # nothing was stored
    assert "Traceback" not in server.output()


def test_a_deleted_database_file_stops_acknowledging(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        url = f"{server.base}/v1/queues/intake/jobs"
        assert httpx.post(url, json={"payload": {"n": 1}}).status_code == 201
        for suffix in ("", "-wal", "-shm"):
            Path(f"{server.db}{suffix}").unlink(missing_ok=True)

        refused = httpx.post(url, json={"payload": {"n": 2}})
        assert refused.status_code == 503, refused.text
        assert "deleted or replaced" in refused.json()["error"]["message"]
        assert "Retry-After" in refused.headers
        ready = httpx.get(f"{server.base}/readyz")
        assert ready.status_code == 503
        assert "deleted or replaced" in ready.json()["backend"]["error"]
        wait_until(lambda: "deleted or replaced" in server.output(), 10, "the error log", server)
    log = server.output()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("ERROR forebay.sqlite") == 1, log[-3000:]
