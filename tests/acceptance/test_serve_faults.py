"""``forebay serve`` against clients that misbehave, over real sockets (docs/security.md).

* a connection that sends half its headers, or nothing, is closed after ``header_timeout_s``;
* a body that does not arrive within ``body_timeout_s`` is answered 408 and nothing is stored;
* hundreds of idle connections, more than the process may open files, do not lock new requests
  out: the connection waiting longest for its headers makes room;
* a client that hangs up mid-body is counted as 499 and logged at INFO;
* without tokens, a foreign ``Host``, a foreign ``Origin`` and a non-JSON body are refused.

The bounds are shortened through their ``FOREBAY_*`` variables, and after every test the
service's log holds no error and no traceback.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.test_serve import Server, serve, wait_until
from tests.integration.test_http import sample

HALF_HEADERS = b"POST /v1/queues/documents/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@contextmanager
def sockets(server: Server) -> Iterator[Any]:
    """``open()`` gives a new connection to the server; all are closed at the end."""
    host, _, port = server.base.removeprefix("http://").partition(":")
    with ExitStack() as stack:

        def open_one() -> socket.socket:
            return stack.enter_context(socket.create_connection((host, int(port)), timeout=10))

        yield open_one


def read_until_closed(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not."""
    received = b""
    deadline = time.monotonic() + within_s
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open after {within_s} s; got {received!r}") from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_response(sock: socket.socket) -> bytes:
    """One complete response with a Content-Length body (the connection stays open)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def metrics(server: Server) -> str:
    return httpx.get(f"{server.base}/metrics", timeout=10).text


def assert_quiet(server: Server) -> list[dict[str, Any]]:
    """The service logged no error and no traceback; its JSON log lines."""
    output = server.output()
    assert "Traceback" not in output, output[-3000:]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    loud = [ln for ln in lines if ln["level"] in ("error", "critical") or "exception" in ln]
    assert not loud, loud
    return lines


def test_a_connection_that_sends_half_its_headers_is_closed_after_the_bound(
    tmp_path: Path,
) -> None:
    env = {"FOREBAY_HEADER_TIMEOUT_S": "0.5"}
    with (
        serve(tmp_path, "--log-format", "json", "--no-workers", env=env) as server,
        sockets(server) as connect,
    ):
        opened = time.monotonic()
        half = connect()
        half.sendall(HALF_HEADERS)
        silent = connect()
        kept = connect()  # one request answered, then half of the next one
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(kept).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHo")

        assert read_until_closed(half, 10).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - opened >= 0.45
        assert read_until_closed(silent, 10) == b""  # nothing was asked: nothing to answer
        assert read_until_closed(kept, 10).startswith(b"HTTP/1.1 408")
        assert httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200
        closed = sample(
            metrics(server), "forebay_http_connections_closed_total", reason="header_timeout"
        )
        assert closed == 3
    assert_quiet(server)


def test_a_body_that_does_not_arrive_in_time_is_answered_408(tmp_path: Path) -> None:
    env = {"FOREBAY_BODY_TIMEOUT_S": "0.5"}
    with (
        serve(tmp_path, "--log-format", "json", "--no-workers", env=env) as server,
        sockets(server) as connect,
    ):
        slow = connect()
        slow.sendall(
            HALF_HEADERS
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            + b'{"payload": '
        )
        answer = read_until_closed(slow, 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"body_timeout" in answer
        jobs = httpx.get(f"{server.base}/v1/jobs", timeout=10).json()["jobs"]
        assert jobs == []
        text = metrics(server)
        assert sample(text, "forebay_intake_requests_total", source="api", status="408") == 1
        assert sample(text, "forebay_http_connections_closed_total", reason="body_timeout") == 1
    lines = assert_quiet(server)
    assert any(ln["level"] == "info" and "did not arrive" in ln["message"] for ln in lines)


def _few_open_files() -> None:
    """In the service's process: an open-file limit far below the connections opened."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_idle_connections_do_not_lock_out_new_requests(tmp_path: Path) -> None:
    env = {"FOREBAY_HEADER_TIMEOUT_S": "60"}  # the bound on connections, not the timeout, acts
    with (
        serve(
            tmp_path, "--log-format", "json", "--no-workers", env=env, preexec_fn=_few_open_files
        ) as server,
        sockets(server) as connect,
    ):
        for _ in range(400):
            connect().sendall(HALF_HEADERS)
        for n in range(3):
            posted = httpx.post(
                f"{server.base}/v1/queues/documents/jobs", json={"payload": n}, timeout=10
            )
            assert posted.status_code == 201, posted.text
        text = metrics(server)
        assert sample(text, "forebay_http_connections_closed_total", reason="evicted") > 0
    lines = assert_quiet(server)
    assert any("connections" in ln["message"] and "256" in ln["message"] for ln in lines), lines


def test_a_client_gone_mid_body_is_counted_499_and_logged_at_info(tmp_path: Path) -> None:
    with (
        serve(tmp_path, "--log-format", "json", "--no-workers") as server,
        sockets(server) as connect,
    ):
        gone = connect()
        gone.sendall(
            HALF_HEADERS
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"payload": "'
        )
        gone.close()

        def counted() -> bool:
            return (
                sample(metrics(server), "forebay_intake_requests_total", source="api", status="499")
                == 1
            )

        wait_until(counted, 10, "the request to be counted as 499", server)
        assert httpx.get(f"{server.base}/v1/jobs", timeout=10).json()["jobs"] == []
        assert (
            sample(metrics(server), "forebay_intake_requests_total", source="api", status="500")
            == 0
        )
    lines = assert_quiet(server)
    assert any(ln["level"] == "info" and "disconnected" in ln["message"] for ln in lines)


def test_the_token_less_service_refuses_what_only_a_web_page_would_send(tmp_path: Path) -> None:
    with serve(tmp_path, "--log-format", "json", "--no-workers") as server:
        jobs = f"{server.base}/v1/queues/documents/jobs"
        rebound = httpx.get(f"{server.base}/v1/jobs", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 403
        assert rebound.json()["error"]["type"] == "host_not_allowed"
        plain = httpx.post(jobs, content=b'{"payload": 1}', headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        cross = httpx.post(jobs, json={"payload": 1}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert httpx.get(f"{server.base}/v1/jobs").json()["jobs"] == []
        assert httpx.post(jobs, json={"payload": 1}).status_code == 201
    assert_quiet(server)
