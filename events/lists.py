"""Events of the list aggregate: a named board pointing at a git repository."""

from __future__ import annotations

from msgspec import UNSET, UnsetType

from events._base import Amount, ListEvent, Positive, Seconds


class ListCreated(ListEvent, frozen=True, kw_only=True):
    """A list was created. `dir` is the git work tree its tasks run in (None: sandbox)."""

    name: str
    dir: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    agent_path: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    max_budget_usd: Amount | None = None
    max_turns: Positive | None = None
    timeout_s: Seconds | None = None


class ListConfigured(ListEvent, frozen=True, kw_only=True):
    """Some settings of a list changed. Absent fields are unchanged; null clears a setting."""

    name: str | UnsetType = UNSET
    dir: str | UnsetType | None = UNSET
    model: str | UnsetType | None = UNSET
    system_prompt: str | UnsetType | None = UNSET
    agent_path: str | UnsetType | None = UNSET
    permission_mode: str | UnsetType | None = UNSET
    allowed_tools: tuple[str, ...] | UnsetType | None = UNSET
    max_budget_usd: Amount | UnsetType | None = UNSET
    max_turns: Positive | UnsetType | None = UNSET
    timeout_s: Seconds | UnsetType | None = UNSET


class ListArchived(ListEvent, frozen=True, kw_only=True):
    """The user put the list away: `list ls`, `tasks` and the board leave it and its tasks
    out unless asked (`--archived`); `list unarchive` brings them back."""


class ListUnarchived(ListEvent, frozen=True, kw_only=True):
    """An archived list was brought back, with its tasks."""


class ListDeleted(ListEvent, frozen=True, kw_only=True):
    """The user deleted the list: it and its tasks are shown only with `--archived`, it takes
    no more tasks, and its name is free again; every event stays. `forced`: the user
    overrode a refusal, which `overrode` names (tasks queued or running, unmerged work)."""

    forced: bool = False
    overrode: str | None = None


LIST_EVENTS: tuple[type[ListEvent], ...] = (
    ListCreated,
    ListConfigured,
    ListArchived,
    ListUnarchived,
    ListDeleted,
)
