"""ClaudeDo's events: what happened, as immutable structs, their codec, subjects and log."""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from events._base import AGENT_SETTINGS, Event, ListEvent, TaskEvent
    from events._ids import new_aggregate_id, new_event_id
    from events.catalog import AGGREGATES, ALL_EVENTS, EVENTS_BY_NAME, AnyEvent
    from events.codec import DecodeError, Envelope, Origin, decode, encode, envelop, upcaster
    from events.errors import Ambiguous, ClaudeDoError, Conflict, Invalid, NotFound, Unavailable
    from events.lists import ListConfigured, ListCreated
    from events.log import (
        STREAM,
        ConcurrencyError,
        EventLog,
        EventReader,
        RawEvent,
        stream_config,
    )
    from events.subjects import (
        API_PREFIX,
        EVENTS_ALL,
        aggregate_filter,
        api_subject,
        collection_filter,
        event_subject,
        output_subject,
        parse_event_subject,
    )
    from events.tasks import (
        PermissionDenial,
        ReviewEnded,
        ReviewStarted,
        RunFinished,
        RunProcessSpawned,
        RunSessionOpened,
        RunStarted,
        SandboxCreated,
        SessionLost,
        Subtask,
        SubtaskAdded,
        SubtaskCompleted,
        SubtaskReopened,
        TaskCancelled,
        TaskCancelRequested,
        TaskClaimed,
        TaskCompleted,
        TaskCreated,
        TaskEdited,
        TaskFailed,
        TaskQueued,
        TaskRequeued,
        TaskStarted,
        TaskUnqueued,
        WorktreeCommitted,
        WorktreeCreated,
        WorktreeDiscarded,
        WorktreeMerged,
    )

# Every name is loaded on first use (PEP 562): the CLI needs only events._base and
# events.errors, and a command's start-up is most of its round trip (the catalog, the codec
# and the ids cost it about 8 ms; the log needs nats-py, slower still).
_NAMES_OF = {
    "events._base": ("AGENT_SETTINGS", "Event", "ListEvent", "TaskEvent"),
    "events._ids": ("new_aggregate_id", "new_event_id"),
    "events.catalog": ("AGGREGATES", "ALL_EVENTS", "EVENTS_BY_NAME", "AnyEvent"),
    "events.codec": (
        "DecodeError",
        "Envelope",
        "Origin",
        "decode",
        "encode",
        "envelop",
        "upcaster",
    ),
    "events.errors": (
        "Ambiguous",
        "ClaudeDoError",
        "Conflict",
        "Invalid",
        "NotFound",
        "Unavailable",
    ),
    "events.lists": ("ListConfigured", "ListCreated"),
    "events.subjects": (
        "API_PREFIX",
        "EVENTS_ALL",
        "aggregate_filter",
        "api_subject",
        "collection_filter",
        "event_subject",
        "output_subject",
        "parse_event_subject",
    ),
    "events.tasks": (
        "PermissionDenial",
        "ReviewEnded",
        "ReviewStarted",
        "RunFinished",
        "RunProcessSpawned",
        "RunSessionOpened",
        "RunStarted",
        "SandboxCreated",
        "SessionLost",
        "Subtask",
        "SubtaskAdded",
        "SubtaskCompleted",
        "SubtaskReopened",
        "TaskCancelled",
        "TaskCancelRequested",
        "TaskClaimed",
        "TaskCompleted",
        "TaskCreated",
        "TaskEdited",
        "TaskFailed",
        "TaskQueued",
        "TaskRequeued",
        "TaskStarted",
        "TaskUnqueued",
        "WorktreeCommitted",
        "WorktreeCreated",
        "WorktreeDiscarded",
        "WorktreeMerged",
    ),
    "events.log": (
        "STREAM",
        "ConcurrencyError",
        "EventLog",
        "EventReader",
        "RawEvent",
        "stream_config",
    ),
}
_DEFINED_IN = {name: module for module, names in _NAMES_OF.items() for name in names}


def __getattr__(name: str) -> object:
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module 'events' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use finds it without coming here
    return value


__all__ = [
    "AGENT_SETTINGS",
    "AGGREGATES",
    "ALL_EVENTS",
    "API_PREFIX",
    "EVENTS_ALL",
    "EVENTS_BY_NAME",
    "STREAM",
    "Ambiguous",
    "AnyEvent",
    "ClaudeDoError",
    "ConcurrencyError",
    "Conflict",
    "DecodeError",
    "Envelope",
    "Event",
    "EventLog",
    "EventReader",
    "Invalid",
    "ListConfigured",
    "ListCreated",
    "ListEvent",
    "NotFound",
    "Origin",
    "PermissionDenial",
    "RawEvent",
    "ReviewEnded",
    "ReviewStarted",
    "RunFinished",
    "RunProcessSpawned",
    "RunSessionOpened",
    "RunStarted",
    "SandboxCreated",
    "SessionLost",
    "Subtask",
    "SubtaskAdded",
    "SubtaskCompleted",
    "SubtaskReopened",
    "TaskCancelRequested",
    "TaskCancelled",
    "TaskClaimed",
    "TaskCompleted",
    "TaskCreated",
    "TaskEdited",
    "TaskEvent",
    "TaskFailed",
    "TaskQueued",
    "TaskRequeued",
    "TaskStarted",
    "TaskUnqueued",
    "Unavailable",
    "WorktreeCommitted",
    "WorktreeCreated",
    "WorktreeDiscarded",
    "WorktreeMerged",
    "aggregate_filter",
    "api_subject",
    "collection_filter",
    "decode",
    "encode",
    "envelop",
    "event_subject",
    "new_aggregate_id",
    "new_event_id",
    "output_subject",
    "parse_event_subject",
    "stream_config",
    "upcaster",
]
