"""The base classes every event payload derives from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

# Value ranges every reader can store (DuckDB INTEGER/BIGINT, Arrow): an event outside them is
# refused when decoded, so it is skipped and recorded, never half-applied. The API's requests
# use the same types (claudedo_actors/api/verbs.py), so a value the log would refuse is refused
# before anything is appended.
INT32_MAX = 2**31 - 1
AMOUNT_MAX = 1e12
SECONDS_MAX = 1e9
Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
Positive = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Signed = Annotated[int, Meta(ge=-(2**31), le=INT32_MAX)]
BigCount = Annotated[int, Meta(ge=0, le=2**53)]
Amount = Annotated[float, Meta(ge=0, le=AMOUNT_MAX)]
Seconds = Annotated[float, Meta(gt=0, le=SECONDS_MAX)]
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
