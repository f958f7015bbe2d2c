"""Appends of one claimed task, guarded by its last sequence, never given up lightly.

A slot owns the task it claimed, but users may still append to it (a cancel request). When
the guard moved, the writer folds the task from the log: if this node still holds it, it
takes the new sequence (and learns of a cancel request) and appends again; otherwise it
raises LostTask. Terminal writes are retried through NATS trouble, not cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import events as ev
from claudedo_actors.runner.ports import TaskLog
from claudedo_actors.runner.spool import Spool
from events.errors import ClaudeDoError
from projections import TaskState, fold_task

log = logging.getLogger("claudedo.writer")


class LostTask(ClaudeDoError):
    """The task is no longer this node's to write (requeued or settled by someone else)."""

    code = "lost_task"


class Spooled(LostTask):
    """The node stops while the log is unreachable: the append waits on disk (spool.py) for
    the node's next start."""

    code = "spooled"


class CancelSeen(Exception):
    """A cancel request arrived; the caller asked not to append anything but a cancel then."""


class TaskWriter:
    """Thread-safe: the slot and its run actor both append through it."""

    def __init__(
        self,
        facade: TaskLog,
        task_id: str,
        node_id: str,
        state: TaskState,
        expected_seq: int,
        correlation_id: str,
        on_cancel: Callable[[], None],
        spool: Spool | None = None,
    ) -> None:
        """`state`: the task as of `expected_seq` (the claim); kept folded with every
        append, and read again from the log after a conflict."""
        self.state = state
        self.task_id = task_id
        self.node_id = node_id
        self.expected_seq = expected_seq
        self.cancel_seen = False
        self._facade = facade
        self._origin = ev.Origin(
            node_id=node_id, correlation_id=correlation_id, actor=f"node:{node_id}"
        )
        self._on_cancel = on_cancel
        self._spool = spool
        self._lock = threading.Lock()

    def append(self, *events: ev.Event, unless_cancelled: bool = False) -> int:
        """Append in order; returns the last sequence. See CancelSeen, LostTask, Spooled.

        NATS trouble is never given up on while the node runs: the same envelopes are sent
        again (idempotent) until they are stored, and from the first failure they also wait
        in the spool, so that a node killed meanwhile appends them at its next start.
        """
        envs = [ev.envelop(e, self.task_id, self._origin) for e in events]
        with self._lock:
            pause_s = 0.05
            spooled: Path | None = None
            while True:
                if unless_cancelled and self.cancel_seen:
                    raise CancelSeen()
                try:
                    seqs = self._facade.append(envs, self.expected_seq)
                except ev.ConcurrencyError:
                    self._unspool(spooled)
                    spooled = None
                    self._reconcile()
                    continue
                except (ClaudeDoError, AssertionError):
                    raise
                except Exception as exc:
                    if spooled is None and self._spool is not None:
                        spooled = self._spool.keep(self.task_id, self.expected_seq, envs)
                    if self._facade.closing:
                        raise Spooled(
                            f"task {self.task_id[:8]}: the log is unreachable as the node "
                            f"stops; its last events wait in {spooled}"
                        ) from None
                    log.warning("append to task %s failed (%s); retrying", self.task_id[:8], exc)
                    time.sleep(pause_s)  # backoff between retries of a write
                    pause_s = min(pause_s * 2, 2.0)
                    continue
                self._unspool(spooled)
                self.expected_seq = seqs[-1]
                self._fold(envs, seqs)
                return seqs[-1]

    def _unspool(self, path: Path | None) -> None:
        if path is not None and self._spool is not None:
            self._spool.drop(path)

    def _fold(self, envs: list[ev.Envelope], seqs: list[int]) -> None:
        try:
            for env, seq in zip(envs, seqs, strict=True):
                self.state = fold_task(self.state, env, seq)
        except ValueError:  # the fold refused what the log took: the log's fold is the truth
            state, _ = self._facade.load_task(self.task_id, leader=True)
            if state is not None:
                self.state = state

    def _reconcile(self) -> None:
        state, last = self._facade.load_task(self.task_id, leader=True)
        if not _held_by(state, self.node_id):
            status = state.status if state is not None else "gone"
            raise LostTask(f"task {self.task_id[:8]} is no longer held by this node ({status})")
        assert state is not None
        self.expected_seq = last
        self.state = state
        if state.cancel_requested and not self.cancel_seen:
            self.cancel_seen = True
            self._on_cancel()


def _held_by(state: TaskState | None, node_id: str) -> bool:
    return (
        state is not None and state.status in ("claimed", "running") and state.claimed_by == node_id
    )
