"""ClaudeDo's projections: what is true now, derived from the event log into DuckDB."""

from projections.projector import GapError, Projection
from projections.state import (
    ALLOWED_FROM,
    STATUSES,
    TERMINAL,
    ListState,
    RunState,
    SubtaskState,
    TaskState,
    WorktreeState,
    fold_list,
    fold_task,
    refusal,
)
from projections.store import checkpoint_of, open_db

__all__ = [
    "ALLOWED_FROM",
    "STATUSES",
    "TERMINAL",
    "GapError",
    "ListState",
    "Projection",
    "RunState",
    "SubtaskState",
    "TaskState",
    "WorktreeState",
    "checkpoint_of",
    "fold_list",
    "fold_task",
    "open_db",
    "refusal",
]
