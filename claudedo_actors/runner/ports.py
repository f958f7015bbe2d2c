"""What the runner needs of its node, as protocols: the log facade and the node's folders.

The node (`claudedo_actors.node`) provides both; the runner names only these, so the rooms
depend one way (node -> runner) and a test can hand the runner anything that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import events as ev
from projections import ListState, TaskState


class TaskLog(Protocol):
    """Blocking calls on the event log and the output stream (node/log_facade.py).

    Each call raises `events.errors.ConcurrencyError` when a guarded append lost its race,
    and `TimeoutError` or a NATS error when the log could not be reached in time.
    """

    @property
    def max_payload(self) -> int: ...

    @property
    def closing(self) -> bool:
        """Whether the node is stopping (writers stop waiting for an unreachable log)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether NATS is reachable now (no new runs start while it is not)."""
        ...

    def append(
        self, envelopes: Sequence[ev.Envelope], expected_seq: int | None, guard: str | None = None
    ) -> list[int]: ...

    def load_task(self, task_id: str, leader: bool = False) -> tuple[TaskState | None, int]: ...

    def load_list(self, list_id: str) -> ListState | None: ...

    def watch(self, subject_filter: str, on_event: Callable[[str, int], None]) -> None: ...

    def last_seq(self) -> int: ...

    def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None: ...


class Folders(Protocol):
    """Where a node keeps worktrees, sandbox folders and run logs (node/home.py)."""

    @property
    def worktrees_dir(self) -> Path: ...

    @property
    def sandboxes_dir(self) -> Path: ...

    @property
    def logs_dir(self) -> Path: ...

    @property
    def spool_dir(self) -> Path: ...
