"""forebay.jsonio reads and writes the same data as the standard library, only faster."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forebay import jsonio
from forebay.errors import InvalidPayload
from forebay.job import NewJob

# JSON data as a body may hold it: integers of any size, finite floats, any text (lone
# surrogates included: JSON may spell them as escapes).
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=25,
)


@given(json_data)
def test_reads_what_the_standard_library_reads(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert jsonio.loads(text) == json.loads(text)
        assert jsonio.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)


@given(json_data)
def test_writes_text_that_reads_back_the_same(value: object) -> None:
    assert json.loads(jsonio.dumps(value)) == value
    assert json.loads(jsonio.dumps_sorted(value)) == value
    assert jsonio.dumps_sorted(value) == jsonio.dumps_sorted(json.loads(json.dumps(value)))


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    for number in (2**64, -(2**63) - 1, 10**40, 18446744073709551615):
        assert jsonio.loads(f'{{"n":[{number}]}}') == {"n": [number]}
        assert jsonio.dumps({"n": number}) == f'{{"n":{number}}}'
    # digits in a string are text, and a long float stays a float
    assert jsonio.loads('["123456789012345678901234"]') == ["123456789012345678901234"]
    assert jsonio.loads("0.123456789012345678901234") == pytest.approx(0.1234567890123456)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a":-Infinity}', "1e400", "[-1e999]"])
def test_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        jsonio.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a":}', "[1,]", b"\xff\xfe\xfa"])
def test_what_is_not_json_raises_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsonio.loads(text)


def test_utf16_bodies_are_read_as_before() -> None:
    assert jsonio.loads('{"é":1}'.encode("utf-16")) == {"é": 1}


def test_deep_nesting_raises_recursion_error_not_a_crash() -> None:
    with pytest.raises(RecursionError):
        jsonio.loads("[" * 100_000 + "]" * 100_000)


def test_a_parsed_payload_is_stored_as_the_same_data() -> None:
    payload = jsonio.loads('{"a":[1,2.5,"x",null,true],"big":123456789012345678901234567890}')
    job = NewJob.create("q", payload, parsed=True)
    assert json.loads(job.payload_json) == payload
    assert math.isfinite(json.loads(job.payload_json)["a"][1])


def test_a_lone_surrogate_is_refused_when_stored_not_read() -> None:
    # JSON may spell one; no job store can keep it: the enqueue says so (400 over HTTP).
    payload = jsonio.loads('{"text": "\\ud800"}')
    for parsed in (True, False):
        with pytest.raises(InvalidPayload, match="surrogates"):
            NewJob.create("q", payload, parsed=parsed)
