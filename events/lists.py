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


LIST_EVENTS: tuple[type[ListEvent], ...] = (ListCreated, ListConfigured)
