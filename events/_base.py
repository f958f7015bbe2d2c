"""The base classes every event payload derives from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

# Value ranges every reader can store (DuckDB INTEGER/BIGINT, Arrow): an event outside them is
# refused when decoded, so it is skipped and recorded, never half-applied.
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Positive = Annotated[int, Meta(ge=1, le=2**31 - 1)]
Signed = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
BigCount = Annotated[int, Meta(ge=0, le=2**53)]
Amount = Annotated[float, Meta(ge=0, le=1e12)]
Seconds = Annotated[float, Meta(gt=0, le=1e9)]
UtcTime = Annotated[datetime, Meta(tz=True)]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """A fact that happened. The JSON object carries its class name under "type"."""

    AGGREGATE: ClassVar[str] = ""
    # Bumped when a payload changes shape in a way a default cannot absorb; older versions
    # are upcast on read (see events.codec).
    SCHEMA_VERSION: ClassVar[int] = 1


class ListEvent(Event, frozen=True, kw_only=True):
    """An event of the list aggregate."""

    AGGREGATE: ClassVar[str] = "list"


class TaskEvent(Event, frozen=True, kw_only=True):
    """An event of the task aggregate (runs and worktrees belong to the task)."""

    AGGREGATE: ClassVar[str] = "task"


# The agent settings a list or a task carries (a task's value wins over its list's, then the
# default): fields of ListCreated/ListConfigured and TaskCreated/TaskEdited alike.
AGENT_SETTINGS: tuple[str, ...] = (
    "model",
    "system_prompt",
    "agent_path",
    "permission_mode",
    "allowed_tools",
    "max_budget_usd",
    "max_turns",
    "timeout_s",
)
