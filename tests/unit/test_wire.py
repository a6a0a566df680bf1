"""Errors cross the handler-process boundary with their class and attributes."""

from __future__ import annotations

import threading

from forebay import Defer, PermanentError, SinkUnavailable
from forebay.execution.wire import dump_error, load_error


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_error_keeps_its_class_and_attributes() -> None:
    back = load_error(dump_error(_raised(Defer(30, "rate limited"))))
    assert type(back) is Defer and back.delay_s == 30 and back.reason == "rate limited"
    assert str(back) == "rate limited (for 30s)"
    sink = load_error(dump_error(_raised(SinkUnavailable("down"))))
    assert isinstance(sink, SinkUnavailable) and str(sink) == "down"
    assert any("raised in a handler process" in note for note in back.__notes__)
    assert any("Traceback" in note for note in back.__notes__)


def test_an_attribute_that_does_not_pickle_is_left_behind() -> None:
    error = PermanentError("refused")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    back = load_error(dump_error(_raised(error)))
    assert type(back) is PermanentError and str(back) == "refused"
    assert not hasattr(back, "lock")


def test_an_error_that_cannot_be_rebuilt_becomes_a_runtime_error() -> None:
    back = load_error((None, "Traceback ...\nweird.Error: cannot pickle me"))
    assert type(back) is RuntimeError
    assert str(back) == "in a handler process: weird.Error: cannot pickle me"
    garbage = load_error((b"not a pickle", "ValueError: x"))
    assert type(garbage) is RuntimeError
