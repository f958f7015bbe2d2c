"""The whole event catalog as one tagged union, and lookups by name."""

from __future__ import annotations

from typing import Union

from events._base import Event
from events.checkpoints import LOG_EVENTS, LogCheckpointed
from events.lists import (
    LIST_EVENTS,
    ListArchived,
    ListConfigured,
    ListCreated,
    ListDeleted,
    ListUnarchived,
)
from events.tasks import (
    TASK_EVENTS,
    ReviewEnded,
    ReviewStarted,
    RunFinished,
    RunProcessSpawned,
    RunSessionOpened,
    RunStarted,
    SandboxCreated,
    SessionLost,
    SubtaskAdded,
    SubtaskCompleted,
    SubtaskReopened,
    TaskArchived,
    TaskCancelled,
    TaskCancelRequested,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskDeleted,
    TaskEdited,
    TaskFailed,
    TaskQueued,
    TaskRequeued,
    TaskStarted,
    TaskUnarchived,
    TaskUnqueued,
    WorktreeCommitted,
    WorktreeCreated,
    WorktreeDiscarded,
    WorktreeMerged,
)

# Spelled out for the type checker; the test suite checks it equals ALL_EVENTS.
AnyEvent = Union[  # noqa: UP007 - a runtime Union object is what msgspec decodes against
    ListCreated,
    ListConfigured,
    ListArchived,
    ListUnarchived,
    ListDeleted,
    TaskCreated,
    TaskEdited,
    SubtaskAdded,
    SubtaskCompleted,
    SubtaskReopened,
    TaskQueued,
    TaskUnqueued,
    TaskClaimed,
    TaskStarted,
    TaskRequeued,
    TaskCompleted,
    TaskFailed,
    TaskCancelRequested,
    TaskCancelled,
    TaskArchived,
    TaskUnarchived,
    TaskDeleted,
    WorktreeCreated,
    SandboxCreated,
    WorktreeCommitted,
    WorktreeMerged,
    WorktreeDiscarded,
    ReviewStarted,
    ReviewEnded,
    RunStarted,
    RunProcessSpawned,
    RunSessionOpened,
    SessionLost,
    RunFinished,
    LogCheckpointed,
]

ALL_EVENTS: tuple[type[Event], ...] = LIST_EVENTS + TASK_EVENTS + LOG_EVENTS
EVENTS_BY_NAME: dict[str, type[Event]] = {cls.__name__: cls for cls in ALL_EVENTS}
AGGREGATES: tuple[str, ...] = ("list", "task", "log")
