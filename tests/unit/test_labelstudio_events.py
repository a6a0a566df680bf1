"""Webhook bodies → changes and keys: every action, bulk bodies, missing fields, secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.events import change_key, normalise_time, split_event
from forebay.errors import InvalidPayload
from forebay.job import JSON

SECRETS = ("g9G32LF90qabHUKtgjC4roHcZVfZDAnNQu6hQhRF", "846c4da585704dd4")


def one(body: JSON) -> dict[str, Any]:
    changes = split_event(body)
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, dict)
    return change


def test_annotation_created_carries_its_task_and_a_clean_project() -> None:
    change = one(samples.load("real_annotation_created_rectanglelabels_multipage.json"))
    assert change["kind"] == "annotation"
    assert (change["project_id"], change["task_id"], change["annotation_id"]) == (1, 1, 1)
    assert change["updated_at"] == "2026-11-22T05:18:08.980576Z"
    assert change["task"]["data"]["doc_id"] == "doc1"
    assert set(change["project"]) == {"id", "title", "description", "created_at", "updated_at"}
    assert change_key(change) == "labelstudio:1:1:1:2026-11-22T05:18:08.980576Z"


def test_an_update_gets_a_new_key_and_a_repeat_the_same() -> None:
    created = one(samples.load("real_annotation_created_rectanglelabels_multipage.json"))
    updated = one(samples.load("real_annotation_updated.json"))
    assert change_key(updated) != change_key(created)
    assert change_key(one(samples.load("real_annotation_updated.json"))) == change_key(updated)


@pytest.mark.parametrize("name", samples.ORDER)
def test_no_secret_survives_any_sample(name: str) -> None:
    text = json.dumps(split_event(samples.load(name)))
    for secret in SECRETS:
        assert secret not in text
    assert '"token"' not in text and "task_data_password" not in text


def test_bulk_annotations_created_pairs_each_annotation_with_its_task() -> None:
    body = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [
            {"id": 10, "task": 2, "updated_at": "2026-01-01T00:00:00Z", "result": []},
            {"id": 11, "task": 3, "updated_at": "2026-01-01T00:00:01Z", "result": []},
        ],
        "task": [{"id": 3, "data": {"doc_id": "c"}}, {"id": 2, "data": {"doc_id": "b"}}],
        "project": {"id": 7, "token": "secret"},
    }
    changes = [c for c in split_event(body) if isinstance(c, dict)]
    assert [(c["annotation_id"], c["task"]["data"]["doc_id"]) for c in changes] == [
        (10, "b"),
        (11, "c"),
    ]
    assert [change_key(c) for c in changes] == [
        "labelstudio:7:2:10:2026-01-01T00:00:00.000000Z",
        "labelstudio:7:3:11:2026-01-01T00:00:01.000000Z",
    ]


def test_five_thousand_annotations_in_one_body() -> None:
    body = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [
            {"id": i, "task": i, "updated_at": "2026-01-01T00:00:00Z"} for i in range(5000)
        ],
        "task": [{"id": i} for i in range(5000)],
        "project": {"id": 1},
    }
    changes = split_event(body)
    assert len(changes) == 5000
    assert len({change_key(c) for c in changes}) == 5000


def test_deletes_carry_ids_only_and_no_key() -> None:
    """Label Studio reuses ids: a second delete of an id is a new event, not a repeat."""
    annotation = one(samples.load("real_annotations_deleted_single.json"))
    assert annotation == {
        "kind": "annotation_deleted",
        "action": "ANNOTATIONS_DELETED",
        "project_id": 1,
        "annotation_id": 1,
        "task_id": None,
    }
    assert change_key(annotation) is None
    task = one(samples.load("real_tasks_deleted_single.json"))
    assert (task["kind"], task["task_id"], change_key(task)) == ("task_deleted", 3, None)
    project = one({"action": "PROJECT_DELETED", "project": {"id": 4}})
    assert (project["kind"], change_key(project)) == ("project_deleted", None)


def test_tasks_created_and_project_updated() -> None:
    task = one(samples.load("real_tasks_created_single.json"))
    assert (task["kind"], task["task_id"], task["project_id"]) == ("task", 3, 1)
    assert change_key(task) == "labelstudio:1:3:-:2026-11-22T05:18:08.402247Z"
    project = one(samples.load("real_project_updated.json"))
    assert project["kind"] == "project"
    assert project["project"]["title"] == "forebay-probe-renamed"
    assert change_key(project) == "labelstudio:1:-:-:2026-11-22T05:18:12.916130Z"


def test_the_action_alone_is_an_empty_change_without_a_key() -> None:
    change = one(samples.load("real_annotation_created_send_payload_false.json"))
    assert change == {"kind": "empty", "action": "ANNOTATION_CREATED"}
    assert change_key(change) is None


def test_an_unknown_action_is_kept_scrubbed() -> None:
    change = one({"action": "SOMETHING_NEW", "project": {"id": 1, "token": "x"}, "n": [1]})
    assert change["kind"] == "unknown" and change["action"] == "SOMETHING_NEW"
    assert change["body"] == {"action": "SOMETHING_NEW", "project": {"id": 1}, "n": [1]}
    assert change_key(change) is None
    assert one({})["kind"] == "unknown"
    assert one({"action": 5})["kind"] == "unknown"


def test_the_documented_example_without_a_task_object() -> None:
    change = one(samples.load("doc_annotation_updated_rectanglelabels.json"))
    assert (change["task_id"], change["annotation_id"], change["task"]) == (5, 16, None)
    assert change_key(change) == "labelstudio:1:5:16:2021-08-17T13:37:25.805479Z"


def test_missing_parts_mean_no_key() -> None:
    change = one({"action": "ANNOTATION_CREATED", "annotation": {"id": 3}})
    assert change["kind"] == "annotation" and change_key(change) is None
    assert change_key({"kind": "task_deleted", "task_id": 3}) is None
    assert change_key("not a change") is None


def test_a_body_that_is_not_an_object_is_refused() -> None:
    for body in ([], "x", 3, None):
        with pytest.raises(InvalidPayload):
            split_event(body)


def test_time_spellings_give_one_key() -> None:
    spellings = ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+01:00"]
    assert {normalise_time(s) for s in spellings} == {"2026-01-01T10:00:00.000000Z"}
    assert normalise_time("yesterday") is None and normalise_time(None) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "task",
                    "project",
                    "annotation",
                    "tasks",
                    "annotations",
                    "result",
                    "updated_at",
                    "data",
                    "token",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    action=st.sampled_from(
        [
            "ANNOTATION_CREATED",
            "ANNOTATIONS_CREATED",
            "ANNOTATIONS_DELETED",
            "TASKS_CREATED",
            "TASKS_DELETED",
            "PROJECT_UPDATED",
            "PROJECT_DELETED",
            "OTHER",
        ]
    ),
    fields=st.dictionaries(
        st.sampled_from(["annotation", "annotations", "task", "tasks", "project"]),
        json_values,
        max_size=4,
    ),
)
def test_any_object_body_is_read_without_error(action: str, fields: dict[str, JSON]) -> None:
    changes = split_event({"action": action, **fields})
    assert changes
    for change in changes:
        key = change_key(change)
        assert key is None or key.startswith("labelstudio:")
        json.dumps(change)
        assert "token" not in _keys(
            change
        )  # a credential's key is dropped (a value may be "token")


def _keys(value: JSON) -> set[str]:
    """Every key of every object in ``value``, at any depth, lower-cased."""
    if isinstance(value, dict):
        return {k.lower() for k in value} | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_credentials_are_dropped_whatever_their_case_and_depth() -> None:
    annotation = {
        "id": 3,
        "task": 2,
        "result": [{"id": "a", "value": {"Token": "s1", "deep": [{"API_KEY": "s2", "n": 2**70}]}}],
        "updated_at": "2026-01-01T00:00:00Z",
    }
    change = one({"action": "ANNOTATION_CREATED", "annotation": annotation})
    text = json.dumps(change)
    assert "s1" not in text and "s2" not in text
    assert change["annotation"]["result"][0]["value"]["deep"] == [{"n": 2**70}]
    assert annotation["result"][0]["value"]["Token"] == "s1"  # the body itself is not changed


def test_a_body_without_credentials_is_shared_not_copied() -> None:
    result = [{"id": "a", "value": {"tokens": 3, "text": ['"token": in a value']}}]
    change = one({"action": "ANNOTATION_CREATED", "annotation": {"id": 3, "result": result}})
    assert change["annotation"]["result"] is result


CREDENTIAL_KEYS = [
    "token",
    "Token",
    "access_token",
    "refreshToken",
    "X-Auth-Token",
    "csrftoken",
    "token_secret",
    "password",
    "db_password",
    "PASSWD",
    "secret",
    "X-Forebay-Secret",
    "aws_secret_access_key",
    "client.Secret",
    "api_key",
    "apiKey",
    "X-Api-Key",
    "API KEY",
    "access-key-id",
    "Private-Key",
    "privateKey",
    "credential",
    "credentials",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "authorization",
    "Proxy-Authorization",
    "auth",
    "basic_auth",
    "cookie",
    "Set-Cookie",
    "SESSION.ID",
    "sessionid",
    "passphrase",
    "task_data_login",
]
NOT_CREDENTIALS = ["tokens", "author", "authors", "keypoints", "key", "monkey", "id", "text"]


@pytest.mark.parametrize("name", CREDENTIAL_KEYS)
def test_a_key_naming_a_credential_is_dropped_whatever_its_spelling(name: str) -> None:
    data = {"doc_id": "d", "deep": [{"storage": {name: "the-value", "bucket": "b"}}], name: "v2"}
    task = {"id": 3, "data": data, "meta": {name: "v3"}}
    annotation = {"id": 4, "task": 3, "result": [{"id": "r", "value": {name: "v4", "x": 1}}]}
    body = {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": task}
    text = json.dumps(split_event(body))
    for value in ("the-value", "v2", "v3", "v4"):
        assert value not in text, name
    assert '"bucket": "b"' in text and '"x": 1' in text
    unknown = json.dumps(split_event({"action": "NEW_THING", "config": {name: "v5", "n": 1}}))
    assert "v5" not in unknown and '"n": 1' in unknown


@pytest.mark.parametrize("name", NOT_CREDENTIALS)
def test_a_key_that_only_resembles_a_credential_is_kept(name: str) -> None:
    task = {"id": 3, "data": {"doc_id": "d", name: ["kept"]}}
    (change,) = split_event({"action": "TASKS_CREATED", "tasks": [task]})
    assert isinstance(change, dict) and change["task"]["data"][name] == ["kept"]
