"""Messages between the queue, slot and run actors: frozen structs, sent with `tell`.

A message that fails in its actor stops that actor through `on_failure` (pykka reports a
failure of a `tell` there, while a failed `ask` only reaches the asker), so every crash is seen.
"""

from __future__ import annotations

from typing import Any

import msgspec

from claudedo_actors.agent.stream_json import RunOutcome, SessionInfo
from projections import ListState, TaskState


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A task this node claimed: its state with the claim, its list, the claim's sequence."""

    task: TaskState
    list: ListState | None
    claim_seq: int
    correlation_id: str


# --- to the queue ------------------------------------------------------------------------


class ResumeDispatch(msgspec.Struct, frozen=True):
    """Start handing out tasks (the node finished starting)."""


class ProjectionAdvanced(msgspec.Struct, frozen=True):
    checkpoint: int


class NodesChanged(msgspec.Struct, frozen=True):
    """A node came or went (its heartbeat), or this node has now listened for a whole lease."""


class TaskQueuedSeen(msgspec.Struct, frozen=True):
    """A TaskQueued event was appended (seen live, before the projection has it)."""

    task_id: str
    seq: int


class SlotFree(msgspec.Struct, frozen=True):
    number: int


class SlotReplaced(msgspec.Struct, frozen=True):
    number: int
    ref: Any


# --- to a slot ---------------------------------------------------------------------------


class Assign(msgspec.Struct, frozen=True):
    claim: Claim


class Holding(msgspec.Struct, frozen=True):
    """Asked (`ask`) by a queue that starts: the id of the task the slot runs, or None."""


class CancelTask(msgspec.Struct, frozen=True):
    task_id: str


class RunEnded(msgspec.Struct, frozen=True):
    run_number: int
    outcome: RunOutcome


# --- to a run ----------------------------------------------------------------------------


class SessionOpened(msgspec.Struct, frozen=True):
    info: SessionInfo


class ProcessExited(msgspec.Struct, frozen=True):
    exit_code: int | None


class CancelRun(msgspec.Struct, frozen=True):
    pass


class TimeIsUp(msgspec.Struct, frozen=True):
    pass


class StopForShutdown(msgspec.Struct, frozen=True):
    """Asked (not told): the node stops; the run ends its process and returns its outcome."""
