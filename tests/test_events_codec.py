"""The event catalog: every event round-trips, old versions decode, schemas are current."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import msgspec
import pytest
from msgspec import UNSET

import events as ev
from events import schema


def _sample(tp: Any) -> Any:
    """A non-default value of a field type (first non-None arm of a union)."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        for meta in get_args(tp)[1:]:
            pattern = getattr(meta, "pattern", None) or ""
            hex_digits = re.fullmatch(r"\^\[0-9a-f\]\{(\d+)\}\$", pattern)
            if hex_digits:  # a hash or a key: that many hex digits
                n = int(hex_digits[1])
                return ("c0ffee" * n)[:n]
        return _sample(get_args(tp)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        arms = [a for a in get_args(tp) if a not in (type(None), msgspec.UnsetType)]
        return _sample(arms[0])
    if origin is tuple:
        return (_sample(get_args(tp)[0]),)
    if tp is str:
        return "some text ✓"
    if tp is int:
        return 7
    if tp is float:
        return 1.25
    if tp is bool:
        return True
    if tp is Any:
        return {"answer": [1, "two", None]}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _full(tp)
    raise AssertionError(f"no sample for {tp!r}")


def _full(cls: type[msgspec.Struct]) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    return cls(**{f.name: _sample(hints[f.name]) for f in msgspec.structs.fields(cls)})


def _minimal(cls: type[msgspec.Struct]) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    return cls(
        **{f.name: _sample(hints[f.name]) for f in msgspec.structs.fields(cls) if f.required}
    )


ORIGIN = ev.Origin(node_id="node-a", correlation_id="corr-1", actor="user:alice@host")


@pytest.mark.parametrize("cls", ev.ALL_EVENTS, ids=lambda c: c.__name__)
def test_every_event_round_trips_through_the_codec(cls: type[ev.Event]) -> None:
    for event in (_minimal(cls), _full(cls)):
        env = ev.envelop(event, ev.new_aggregate_id(), ORIGIN)
        back = ev.decode(ev.encode(env))
        assert back == env
        assert back.subject == f"claudedo.evt.{cls.AGGREGATE}.{env.aggregate_id}.{cls.__name__}"


def test_catalog_union_holds_exactly_the_list_and_task_events() -> None:
    assert set(get_args(ev.AnyEvent)) == set(ev.ALL_EVENTS)
    assert {c.AGGREGATE for c in ev.ALL_EVENTS} == set(ev.AGGREGATES)


def test_events_are_frozen_and_tagged_with_their_name() -> None:
    event = ev.TaskQueued()
    with pytest.raises(AttributeError):
        event.follow_up_prompt = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(event))["type"] == "TaskQueued"


def test_envelope_carries_time_ordered_ids_and_utc_time() -> None:
    envs = [ev.envelop(ev.TaskQueued(), "t", ORIGIN) for _ in range(200)]
    ids = [e.event_id for e in envs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(
        e.occurred_at.tzinfo is not None and e.occurred_at.utcoffset() == UTC.utcoffset(None)
        for e in envs
    )
    assert envs[0].actor == "user:alice@host" and envs[0].correlation_id == "corr-1"


def test_unset_fields_of_a_change_are_left_out_of_the_json() -> None:
    env = ev.envelop(ev.TaskEdited(title="new", model=None), "t", ORIGIN)
    payload = msgspec.json.decode(ev.encode(env))["event"]
    assert payload == {"type": "TaskEdited", "title": "new", "model": None}
    assert ev.decode(ev.encode(env)).event.description is UNSET  # type: ignore[union-attr]


def test_task_created_v1_still_decodes_with_stable_subtask_ids() -> None:
    old = {
        "event_id": "0190f0c4-0000-7000-8000-000000000001",
        "occurred_at": "2024-07-01T10:00:00Z",
        "aggregate_id": "3f2a0000-0000-4000-8000-000000000000",
        "node_id": "n",
        "correlation_id": "c",
        "actor": "user:a",
        "schema_version": 1,
        "event": {"type": "TaskCreated", "list_id": "l", "title": "t", "subtasks": ["a", "b"]},
    }
    raw = msgspec.json.encode(old)
    first, second = ev.decode(raw), ev.decode(raw)
    assert first.schema_version == ev.TaskCreated.SCHEMA_VERSION
    assert isinstance(first.event, ev.TaskCreated)
    assert [s.title for s in first.event.subtasks] == ["a", "b"]
    assert first == second  # every reader derives the same sub-task ids
    assert first.occurred_at == datetime(2024, 7, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"event": {"type": "NoSuchEvent"}}',
        b'{"event": {"type": "TaskQueued"}}',
    ],
)
def test_foreign_bytes_are_a_decode_error(data: bytes) -> None:
    with pytest.raises(ev.DecodeError):
        ev.decode(data)


def test_schema_files_match_the_structs() -> None:
    stale = schema.stale_files()
    assert not stale, f"events/schema is stale for {stale}: run python -m events.schema"


def test_subjects_parse_back() -> None:
    subject = ev.event_subject("task", "abc", "TaskQueued")
    assert ev.parse_event_subject(subject) == ("task", "abc", "TaskQueued")
    assert ev.parse_event_subject("claudedo.evt.task.abc") is None
    assert ev.parse_event_subject("other.evt.task.abc.X") is None


def test_agent_settings_are_fields_of_every_event_and_request_that_carries_them() -> None:
    from claudedo_actors.api import verbs as rq

    for cls in (ev.ListCreated, ev.ListConfigured, ev.TaskCreated, ev.TaskEdited,
                rq.AgentSettings, rq.AgentSettingsChange):  # fmt: skip
        names = {f.name for f in msgspec.structs.fields(cls)}
        assert set(ev.AGENT_SETTINGS) <= names, cls.__name__


def test_every_public_name_of_events_is_loaded_from_its_module_on_first_use() -> None:
    import importlib

    assert set(ev._DEFINED_IN) == set(ev.__all__)
    for name, module in ev._DEFINED_IN.items():
        assert getattr(ev, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError):
        ev.NoSuchEvent  # noqa: B018
