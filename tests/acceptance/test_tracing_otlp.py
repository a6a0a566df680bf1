"""The tracing example (examples/tracing.py, docs/tracing.md) exports its spans over OTLP/HTTP
to the endpoint the ``OTEL_*`` variables name, as a Langfuse-style receiver (a path of its own,
HTTP Basic in ``OTEL_EXPORTER_OTLP_HEADERS``) gets them: a receiver on this machine's loopback
stands in for it and decodes what arrives.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ROOT = Path(__file__).resolve().parents[2]
PATH = "/api/public/otel/v1/traces"
AUTH = "Basic " + base64.b64encode(b"pk-lf-test:sk-lf-test").decode()


@dataclass
class Received:
    spans: list[tuple[str, Span]] = field(default_factory=list)  # (service.name, span)
    refused: list[str] = field(default_factory=list)  # why a request was refused
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP trace receiver on loopback: its base URL, and what it received."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            problem = None
            if self.path != PATH:
                problem = f"path {self.path}"
            elif self.headers.get("Authorization") != AUTH:
                problem = f"authorization {self.headers.get('Authorization')!r}"
            if problem is None:
                request = ExportTraceServiceRequest.FromString(body)
                with received.lock:
                    for resource in request.resource_spans:
                        attributes = {
                            a.key: a.value.string_value for a in resource.resource.attributes
                        }
                        for scope in resource.scope_spans:
                            received.spans.extend(
                                (attributes.get("service.name", ""), s) for s in scope.spans
                            )
            else:
                with received.lock:
                    received.refused.append(problem)
            self.send_response(200 if problem is None else 401)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/public/otel", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _events(span: Span) -> list[str]:
    return [event.name for event in span.events]


def test_the_example_sends_its_spans_where_the_otel_variables_say(
    tmp_path: Path, receiver: tuple[str, Received]
) -> None:
    endpoint, received = receiver
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tracing.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT / "src"),
            "OTEL_SERVICE_NAME": "summaries",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={AUTH.replace(' ', '%20')}",
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("job 1 stored with traceparent 00-")
    assert lines[1] == "job 1 completed after 2 attempts: {'summary': 'A long document abou'}"
    assert received.refused == []
    assert {service for service, _ in received.spans} == {"summaries"}
    spans: dict[str, list[Span]] = {}
    for _, span in received.spans:
        spans.setdefault(span.name, []).append(span)
    assert sorted((name, len(found)) for name, found in spans.items()) == [
        ("model call", 2),
        ("process summaries", 2),
        ("send summaries", 1),
        ("upload", 1),
    ]
    (upload,), (send,) = spans["upload"], spans["send summaries"]
    assert send.trace_id == upload.trace_id and send.parent_span_id == upload.span_id
    assert send.kind == Span.SPAN_KIND_PRODUCER
    traceparent = lines[0].rsplit(" ", 1)[1]
    assert traceparent.split("-")[1:3] == [send.trace_id.hex(), send.span_id.hex()]
    runs = sorted(spans["process summaries"], key=lambda s: s.start_time_unix_nano)
    assert [_events(run) for run in runs] == [["exception", "retry"], []]
    for run in runs:
        assert run.kind == Span.SPAN_KIND_CONSUMER
        assert run.parent_span_id == b""  # a trace of its own...
        assert [(link.trace_id, link.span_id) for link in run.links] == [
            (send.trace_id, send.span_id)  # ...linked to the enqueue
        ]
        (call,) = [s for s in spans["model call"] if s.trace_id == run.trace_id]
        assert call.parent_span_id == run.span_id
