"""API requests: one struct per verb on `claudedo.api.<verb>`, validated on decode."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from events._base import Amount, Positive, Seconds


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Common to every request: who asks, and an optional id to correlate the events."""

    actor: str = "unknown"
    request_id: str | None = None


class AgentSettings(Request, kw_only=True, forbid_unknown_fields=True):
    """Agent settings a list or a task can carry (task > list > default)."""

    model: str | None = None
    system_prompt: str | None = None
    agent_path: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] | None = None
    max_budget_usd: Amount | None = None
    max_turns: Positive | None = None
    timeout_s: Seconds | None = None


class AgentSettingsChange(Request, kw_only=True, forbid_unknown_fields=True):
    """A change of agent settings: absent fields stay, null clears."""

    model: str | UnsetType | None = UNSET
    system_prompt: str | UnsetType | None = UNSET
    agent_path: str | UnsetType | None = UNSET
    permission_mode: str | UnsetType | None = UNSET
    allowed_tools: list[str] | UnsetType | None = UNSET
    max_budget_usd: float | UnsetType | None = UNSET
    max_turns: int | UnsetType | None = UNSET
    timeout_s: float | UnsetType | None = UNSET


class CreateList(AgentSettings, kw_only=True, forbid_unknown_fields=True):
    name: str
    dir: str | None = None


class ConfigureList(AgentSettingsChange, kw_only=True, forbid_unknown_fields=True):
    list_ref: str = msgspec.field(name="list")
    name: str | UnsetType = UNSET
    dir: str | UnsetType | None = UNSET


class ListLists(Request, kw_only=True, forbid_unknown_fields=True):
    pass


class AddTask(AgentSettings, kw_only=True, forbid_unknown_fields=True):
    list_ref: str = msgspec.field(name="list")
    title: str
    description: str = ""
    subtasks: list[str] = []
    queue: bool = False


class ShowTask(Request, kw_only=True, forbid_unknown_fields=True):
    task: str


class EditTask(AgentSettingsChange, kw_only=True, forbid_unknown_fields=True):
    task: str
    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET


class TaskIds(Request, kw_only=True, forbid_unknown_fields=True):
    """Several tasks at once (queue, unqueue, cancel)."""

    tasks: list[str]


class AddSubtasks(Request, kw_only=True, forbid_unknown_fields=True):
    task: str
    titles: list[str]


class MarkSubtasks(Request, kw_only=True, forbid_unknown_fields=True):
    """Sub-tasks by 1-based position or id prefix."""

    task: str
    subtasks: list[str]


class ListTasks(Request, kw_only=True, forbid_unknown_fields=True):
    list_ref: str | None = msgspec.field(name="list", default=None)
    status: str | None = None
    limit: Annotated[int, Meta(ge=1, le=10**9)] | None = None
    offset: Annotated[int, Meta(ge=0, le=10**12)] = 0


class Audit(Request, kw_only=True, forbid_unknown_fields=True):
    task: str


class ContinueTask(Request, kw_only=True, forbid_unknown_fields=True):
    """Resume the task's latest session with a follow-up prompt, as its next run."""

    task: str
    prompt: str


class RunsOfTask(Request, kw_only=True, forbid_unknown_fields=True):
    task: str


class RunSql(Request, kw_only=True, forbid_unknown_fields=True):
    query: str
    timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0


class Rebuild(Request, kw_only=True, forbid_unknown_fields=True):
    pass


class Info(Request, kw_only=True, forbid_unknown_fields=True):
    pass


class WorktreeOf(Request, kw_only=True, forbid_unknown_fields=True):
    """The worktree of one task (diff, merge, discard)."""

    task: str
    stat: bool = False


class Board(Request, kw_only=True, forbid_unknown_fields=True):
    pass
