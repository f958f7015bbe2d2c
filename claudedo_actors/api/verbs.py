"""API requests: one struct per verb on `claudedo.api.<verb>`, validated on decode.

Numbers use the catalog's own range types (events/_base.py), so a value the log would refuse
is refused here, before anything is appended; text and lists are bounded so one request cannot
make an event larger than a NATS message.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from events._base import AMOUNT_MAX, Positive, Seconds, UtcTime

MAX_NAME = 200
MAX_TITLE = 500
MAX_TEXT = 100_000
MAX_PATH = 4096
MAX_ITEMS = 1000
# A reference names a task or a list: an id, an id prefix, or a list's name.
MAX_REF = MAX_NAME

# A budget of nothing could not start a run: more than 0, up to what the catalog stores.
Budget = Annotated[float, Meta(gt=0, le=AMOUNT_MAX)]
Name = Annotated[str, Meta(max_length=MAX_NAME)]
Title = Annotated[str, Meta(max_length=MAX_TITLE)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
PathText = Annotated[str, Meta(max_length=MAX_PATH)]
Ref = Annotated[str, Meta(max_length=MAX_REF)]
Refs = Annotated[list[Ref], Meta(max_length=MAX_ITEMS)]
Titles = Annotated[list[Title], Meta(max_length=MAX_ITEMS)]
Tools = Annotated[list[Name], Meta(max_length=MAX_ITEMS)]
Limit = Annotated[int, Meta(ge=1, le=10**9)]
Offset = Annotated[int, Meta(ge=0, le=10**12)]
SqlTimeout = Annotated[float, Meta(gt=0, le=3600)]


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Common to every request: who asks, an optional id to correlate the events, and whether
    the client reads a reply in several messages (`paged`: see docs/architecture.md, "Replies";
    without it a reply larger than one message is the error `too_large`)."""

    actor: Name = "unknown"
    request_id: Name | None = None
    paged: bool = False


class AgentSettings(Request, kw_only=True, forbid_unknown_fields=True):
    """Agent settings a list or a task can carry (task > list > default)."""

    model: Name | None = None
    system_prompt: Text | None = None
    agent_path: PathText | None = None
    permission_mode: Name | None = None
    allowed_tools: Tools | None = None
    max_budget_usd: Budget | None = None
    max_turns: Positive | None = None
    timeout_s: Seconds | None = None


class AgentSettingsChange(Request, kw_only=True, forbid_unknown_fields=True):
    """A change of agent settings: absent fields stay, null clears."""

    model: Name | UnsetType | None = UNSET
    system_prompt: Text | UnsetType | None = UNSET
    agent_path: PathText | UnsetType | None = UNSET
    permission_mode: Name | UnsetType | None = UNSET
    allowed_tools: Tools | UnsetType | None = UNSET
    max_budget_usd: Budget | UnsetType | None = UNSET
    max_turns: Positive | UnsetType | None = UNSET
    timeout_s: Seconds | UnsetType | None = UNSET


class CreateList(AgentSettings, kw_only=True, forbid_unknown_fields=True):
    name: Name
    dir: PathText | None = None


class ConfigureList(AgentSettingsChange, kw_only=True, forbid_unknown_fields=True):
    list_ref: Ref = msgspec.field(name="list")
    name: Name | UnsetType = UNSET
    dir: PathText | UnsetType | None = UNSET


class ListLists(Request, kw_only=True, forbid_unknown_fields=True):
    archived: bool = False  # also the archived and deleted lists


class ListOf(Request, kw_only=True, forbid_unknown_fields=True):
    """One list (archive, unarchive)."""

    list_ref: Ref = msgspec.field(name="list")


class DeleteList(ListOf, kw_only=True, forbid_unknown_fields=True):
    """`force`: delete even with tasks under way or unmerged work (the event records it)."""

    force: bool = False


class AddTask(AgentSettings, kw_only=True, forbid_unknown_fields=True):
    list_ref: Ref = msgspec.field(name="list")
    title: Title
    description: Text = ""
    subtasks: Titles = []
    queue: bool = False


# A moment of the past: a stream sequence (0: before the first event), or a time (an ISO 8601
# string with an offset).
AsOf = Annotated[int, Meta(ge=0, le=2**63 - 1)] | UtcTime


class ShowTask(Request, kw_only=True, forbid_unknown_fields=True):
    task: Ref
    as_of: AsOf | None = None


class EditTask(AgentSettingsChange, kw_only=True, forbid_unknown_fields=True):
    task: Ref
    title: Title | UnsetType = UNSET
    description: Text | UnsetType = UNSET


class TaskIds(Request, kw_only=True, forbid_unknown_fields=True):
    """Several tasks at once (queue, unqueue, cancel)."""

    tasks: Refs


class DeleteTasks(TaskIds, kw_only=True, forbid_unknown_fields=True):
    """`force`: delete even a task under way or holding unmerged work (recorded)."""

    force: bool = False


class AddSubtasks(Request, kw_only=True, forbid_unknown_fields=True):
    task: Ref
    titles: Titles


class MarkSubtasks(Request, kw_only=True, forbid_unknown_fields=True):
    """Sub-tasks by 1-based position or id prefix."""

    task: Ref
    subtasks: Refs


class ListTasks(Request, kw_only=True, forbid_unknown_fields=True):
    """Tasks oldest first. `after` (a task id) starts after that task: a cursor for pages of
    `limit` tasks that stays right while tasks are added, where an `offset` would shift."""

    list_ref: Ref | None = msgspec.field(name="list", default=None)
    status: Name | None = None
    limit: Limit | None = None
    offset: Offset = 0
    after: Ref | None = None
    as_of: AsOf | None = None
    archived: bool = False  # also archived and deleted tasks, and those of such lists


class Audit(Request, kw_only=True, forbid_unknown_fields=True):
    task: Ref


class ContinueTask(Request, kw_only=True, forbid_unknown_fields=True):
    """Resume the task's latest session with a follow-up prompt, as its next run."""

    task: Ref
    prompt: Text


class RunsOfTask(Request, kw_only=True, forbid_unknown_fields=True):
    task: Ref


class RunSql(Request, kw_only=True, forbid_unknown_fields=True):
    query: Text
    timeout_s: SqlTimeout = 30.0
    as_of: AsOf | None = None


class RunStats(Request, kw_only=True, forbid_unknown_fields=True):
    """The runs' figures by model, list or UTC day (the `run_stats_by_*` views), of the runs
    started at or after `since` (an ISO 8601 time with an offset; absent: every run)."""

    by: Literal["model", "list", "day"] = "model"
    since: UtcTime | None = None


class ExportParquet(Request, kw_only=True, forbid_unknown_fields=True):
    """The projection's tables as Parquet files in `dir`, an absolute folder on the machine of
    the node that answers, new or empty (made if missing)."""

    dir: PathText


class Rebuild(Request, kw_only=True, forbid_unknown_fields=True):
    pass


class Info(Request, kw_only=True, forbid_unknown_fields=True):
    pass


class WorktreeOf(Request, kw_only=True, forbid_unknown_fields=True):
    """The worktree of one task (diff, merge, discard)."""

    task: Ref
    stat: bool = False


class PruneWorktrees(Request, kw_only=True, forbid_unknown_fields=True):
    """Worktrees whose work is merged or that hold none: listed, or removed with `apply`."""

    apply: bool = False


class Board(Request, kw_only=True, forbid_unknown_fields=True):
    """Tasks at work, status counts, cost today; with `cards` > 0 also the first `cards` tasks
    of each column of the web board (or of `column` only), of one list if `list` is given."""

    cards: Annotated[int, Meta(ge=0, le=1000)] = 0
    column: Name | None = None
    list_ref: Ref | None = msgspec.field(name="list", default=None)
