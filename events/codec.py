"""The envelope around every event, its JSON codec, and upcasting of old versions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from events._base import Event, UtcTime
from events._ids import AggregateId, is_aggregate_id, new_event_id
from events.catalog import EVENTS_BY_NAME, AnyEvent
from events.subjects import event_subject


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Who and what caused the events of one command."""

    node_id: str
    correlation_id: str
    actor: str


# The SHA-256 of a stored message, in lowercase hex.
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """An event with the facts every event has: id, time, aggregate, origin, version.

    `aggregate_id` is in the ids' alphabet (events/_ids.py): an envelope with another is not
    decoded, so the projector skips and records it, and no path or subject is made from it.

    `prev` chains an aggregate's events: the SHA-256 of the stored bytes of the aggregate's
    previous event in the log, or null for its first. The log sets it when it appends
    (`EventLog.append`); it is absent only from events written before chains began."""

    event_id: str
    occurred_at: UtcTime
    aggregate_id: AggregateId
    node_id: str
    correlation_id: str
    actor: str
    schema_version: Annotated[int, Meta(ge=1, le=1000)]
    prev: Sha256 | UnsetType | None = UNSET
    event: AnyEvent

    @property
    def aggregate(self) -> str:
        return type(self.event).AGGREGATE

    @property
    def event_type(self) -> str:
        return type(self.event).__name__

    @property
    def subject(self) -> str:
        return event_subject(self.aggregate, self.aggregate_id, self.event_type)


def envelop(event: Event, aggregate_id: str, origin: Origin) -> Envelope:
    """Wrap a new event: fresh time-ordered id, current UTC time, current schema version.

    Raises ValueError for an aggregate id outside the ids' alphabet: the log would refuse it."""
    if not is_aggregate_id(aggregate_id):
        raise ValueError(f"not an aggregate id: {aggregate_id[:80]!r}")
    return Envelope(
        event_id=new_event_id(),
        occurred_at=datetime.now(UTC),
        aggregate_id=aggregate_id,
        node_id=origin.node_id,
        correlation_id=origin.correlation_id,
        actor=origin.actor,
        schema_version=type(event).SCHEMA_VERSION,
        event=event,  # type: ignore[arg-type]  # every Event subclass is in AnyEvent
    )


class DecodeError(Exception):
    """Bytes that are not a ClaudeDo event of any known version."""


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning an envelope dict of `from_version` into the next version."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes | memoryview) -> Envelope:
    """Decode an event of any version; old versions are upcast to the current struct."""
    try:
        env = _decoder.decode(data)
    except msgspec.DecodeError:
        return _decode_old(data)
    if env.schema_version != type(env.event).SCHEMA_VERSION:
        return _decode_old(data)
    return env


def _decode_old(data: bytes | memoryview) -> Envelope:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), dict):
        raise DecodeError("not an event envelope")
    name = raw["event"].get("type")
    cls = EVENTS_BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise DecodeError(f"unknown event type {name!r}")
    version = raw.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= cls.SCHEMA_VERSION:
        raise DecodeError(f"{name} has unknown schema version {version!r}")
    while version < cls.SCHEMA_VERSION:
        step = _UPCASTERS.get((name, version))
        if step is None:
            raise DecodeError(f"no upcaster for {name} v{version}")
        raw = step(raw)
        version += 1
        raw["schema_version"] = version
    if not is_aggregate_id(raw.get("aggregate_id")):
        shown = repr(raw.get("aggregate_id"))
        shown = shown if len(shown) <= 80 else shown[:79] + "…"
        raise DecodeError(f"{name} has aggregate id {shown}, not an id of the node's alphabet")
    try:
        return msgspec.convert(raw, Envelope)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {name}: {exc}") from None


@upcaster("TaskCreated", from_version=1)
def _task_created_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """v1 listed sub-task titles; v2 gives each an id, derived so every reader agrees on it."""
    import uuid

    event = dict(raw["event"])
    task_id = raw.get("aggregate_id", "")
    event["subtasks"] = [
        {"subtask_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"claudedo:{task_id}:{i}")), "title": t}
        for i, t in enumerate(event.get("subtasks") or [])
    ]
    return {**raw, "event": event}
