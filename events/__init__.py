"""ClaudeDo's events: what happened, as immutable structs, their codec, subjects and log."""

from typing import TYPE_CHECKING

from events._base import AGENT_SETTINGS, Event, ListEvent, TaskEvent
from events._ids import new_aggregate_id, new_event_id
from events.catalog import AGGREGATES, ALL_EVENTS, EVENTS_BY_NAME, AnyEvent
from events.codec import DecodeError, Envelope, Origin, decode, encode, envelop, upcaster
from events.errors import Ambiguous, ClaudeDoError, Conflict, Invalid, NotFound, Unavailable
from events.lists import ListConfigured, ListCreated
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

if TYPE_CHECKING:
    from events.log import (
        STREAM,
        ConcurrencyError,
        EventLog,
        EventReader,
        RawEvent,
        stream_config,
    )

# The log needs nats-py, which is slow to import: loaded on first use (PEP 562), so the CLI's
# start stays quick.
_LAZY = {"STREAM", "ConcurrencyError", "EventLog", "EventReader", "RawEvent", "stream_config"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from events import log

        return getattr(log, name)
    raise AttributeError(f"module 'events' has no attribute {name!r}")


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
