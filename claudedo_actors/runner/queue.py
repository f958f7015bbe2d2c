"""The Queue actor: hands queued tasks to free slots, claiming each with a guarded event.

It reads candidates from the projection (fast, maybe stale) and claims with `TaskClaimed`
appended only if the task's last sequence is still the one it read: when another slot or node
got there first the append fails and the task is skipped. No task is dispatched twice.

With several nodes, a task whose next run resumes a session (a continue, or the retry of a run
its node lost) is left to the node that keeps the session while that node is alive; tasks held
by a node whose heartbeat expired are settled here like this node's own orphans.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import pykka

import events as ev
from claudedo_actors.runner import faults
from claudedo_actors.runner.messages import (
    Assign,
    CancelTask,
    Claim,
    Holding,
    NodesChanged,
    ProjectionAdvanced,
    ResumeDispatch,
    SlotFree,
    SlotReplaced,
    TaskQueuedSeen,
)
from claudedo_actors.runner.policy import session_node
from claudedo_actors.runner.ports import TaskLog
from claudedo_actors.runner.recovery import end_lost_review, settle_orphan
from projections import ListState, Projection, TaskState, fold_task
from projections import queries as q

log = logging.getLogger("claudedo.queue")


# (checkpoint, this node's unsettled tasks, lost nodes' tasks, candidates to claim)
_QueueView = tuple[
    int,
    list[tuple[str, str, bool]],
    list[tuple[str, str]],
    list[tuple[str, str]],
    list[tuple[TaskState, int, ListState | None]],
]


class NodesView(Protocol):
    """What the queue asks of the node's presence (claudedo_actors/node/presence.py)."""

    def alive(self) -> frozenset[str]: ...

    def settled(self) -> bool: ...

    def may_be_alive(self, node_id: str) -> bool: ...


class QueueActor(pykka.ThreadingActor):
    """Reacts to the projection moving on and to slots becoming free."""

    def __init__(
        self,
        node_id: str,
        facade: TaskLog,
        projector: Callable[[], Any],
        slots: list[pykka.ActorRef[Any]],
        on_crash: Callable[[str], None],
        nodes: NodesView | None = None,
    ) -> None:
        super().__init__()
        self._nodes = nodes
        # Set when a node came or went (and every lease): the next scan looks for tasks of
        # lost nodes. True at first: a restarted queue looks once.
        self._check_others = True
        self._on_crash = on_crash
        self.node_id = node_id
        self._facade = facade
        self._projector = projector
        self._slots = list(slots)
        self._free = list(range(len(slots)))  # slot numbers, lowest first
        self._running: dict[str, int] = {}  # task id -> slot number
        # Seen queued (live) while no slot was free: taken first when one frees.
        self._waiting: dict[str, None] = {}
        self._scanned_to = -1
        self._paused = True
        # Slots that did not say what they run (busy past the question's deadline): until
        # they do, no task held by this node is taken for an orphan.
        self._unknown: set[int] = set()

    def on_start(self) -> None:
        """Learn what this node's slots run before acting: a queue restarted by the
        supervisor must never take a live run of its own node for an orphan."""
        asked = [(n, ref.ask(Holding(), block=False)) for n, ref in enumerate(self._slots)]
        for number, future in asked:
            try:
                task_id = future.get(timeout=30)
            except pykka.ActorDeadError:
                continue  # a slot being replaced: it comes back free (SlotReplaced)
            except pykka.Timeout:
                self._unknown.add(number)
                self._free.remove(number)
                continue
            if task_id is not None:
                self._free.remove(number)
                self._running[task_id] = number
        if self._running or self._unknown:
            log.info("queue started with %d slot(s) busy", len(self._running) + len(self._unknown))

    # --- messages ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case ResumeDispatch():
                self._paused = False
                self._take_waiting()
                self._scan()
            case ProjectionAdvanced(checkpoint=checkpoint):
                if checkpoint > self._scanned_to:
                    self._scan()
            case TaskQueuedSeen(task_id=task_id):
                self._take_now(task_id)
            case SlotFree(number=number):
                self._slot_free(number)
            case NodesChanged():
                self._check_others = True
                self._fence()
                self._scan()
            case SlotReplaced(number=number, ref=ref):
                self._slots[number] = ref
            case _:
                return super().on_receive(message)
        return None

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        log.error("queue failed: %s", exc_value, exc_info=exc_value)
        self._on_crash(f"{exc_type.__name__}: {exc_value}")

    def _slot_free(self, number: int) -> None:
        self._unknown.discard(number)
        for task_id, slot in list(self._running.items()):
            if slot == number:
                del self._running[task_id]
        if number not in self._free:
            self._free.append(number)
            self._free.sort()
        self._take_waiting()
        if self._free:
            # Nothing seen live was waiting: look in the projection for anything missed.
            self._scan()

    # --- internals -----------------------------------------------------------------------

    def _scan(self) -> None:
        if self._paused:
            return
        if self._running:
            faults.at("queue.scan_while_running")
        nodes = self._nodes
        others = self._check_others and nodes is not None and nodes.settled()
        alive = sorted(nodes.alive()) if others and nodes is not None else None
        checkpoint, held, lost, lost_reviews, candidates = (
            self._projector().run(functools.partial(self._read_queue, alive=alive)).get()
        )
        self._scanned_to = checkpoint
        if others:
            self._check_others = False
        for task_id, holder in lost:
            # Asked again now: a beat may have arrived since the read.
            if nodes is not None and holder != self.node_id and not nodes.may_be_alive(holder):
                self._settle(task_id, holder)
        for task_id, holder in lost_reviews:
            if nodes is not None and holder != self.node_id and not nodes.may_be_alive(holder):
                try:
                    end_lost_review(self._facade, task_id, self.node_id, holder)
                except Exception as exc:  # NATS away: the next scan tries again
                    log.warning("could not end the lost review of %s: %s", task_id[:8], exc)
        for task_id, _status, cancel_requested in held:
            slot = self._running.get(task_id)
            if slot is None and self._unknown:
                continue  # it may be the task of a slot that has not said yet
            if slot is None:
                # Held by this node but run by no slot: an earlier life of the node crashed,
                # or a claim's reply was lost. Settled from the log, never left running.
                self._settle(task_id)
            elif cancel_requested:
                self._slots[slot].tell(CancelTask(task_id))
        for task, last_seq, lst in candidates:
            if not self._free:
                break
            self._claim(task, last_seq, lst)

    def _read_queue(self, p: Projection, alive: list[str] | None) -> _QueueView:
        held = q.tasks_held_by(p, self.node_id)
        lost = q.tasks_held_by_others(p, alive) if alive is not None else []
        lost_reviews = q.reviews_held_by_others(p, alive) if alive is not None else []
        candidates: list[tuple[TaskState, int, ListState | None]] = []
        page, offset = len(self._free) + 8, 0
        while len(candidates) < len(self._free):
            # Queued tasks may be left to the node keeping their session: page on past them.
            ids = q.queued_task_ids(p, page, offset)
            for task_id in ids:
                if len(candidates) == len(self._free):
                    break
                if task_id in self._running:
                    continue
                task = p.task_state(task_id)
                if task is None or self._reserved(task):
                    continue
                candidates.append((task, q.task_last_seq(p, task), p.list_state(task.list_id)))
            if len(ids) < page:
                break
            offset, page = offset + page, min(page * 4, 4096)
        return p.checkpoint, held, lost, lost_reviews, candidates

    def _reserved(self, task: TaskState) -> bool:
        """Left to the node that keeps the session its next run resumes, while that node may
        be alive (a node that has not yet listened for a whole lease does not know)."""
        owner = session_node(task)
        if owner is None or owner == self.node_id:
            return False
        return self._nodes is None or self._nodes.may_be_alive(owner)

    def _fence(self) -> None:
        """Stop the runs of tasks this node no longer holds: another node settled them while
        this node's heartbeats did not reach it. Their worktrees keep what the agents did."""
        for task_id, slot in list(self._running.items()):
            try:
                task, _ = self._facade.load_task(task_id, leader=True)
            except Exception as exc:  # NATS away: the next check (within a lease) asks again
                log.warning("could not check task %s: %s", task_id[:8], exc)
                return
            held = (
                task is not None
                and task.claimed_by == self.node_id
                and task.status in ("claimed", "running")
            )
            if not held:
                # A slot that finished the task meanwhile ignores this.
                log.info("task %s is no longer held by this node: its slot stops", task_id[:8])
                self._slots[slot].tell(CancelTask(task_id))

    def _take_now(self, task_id: str) -> None:
        """A task was just queued: with a free slot, claim it from its own events in the log,
        without waiting for the projection (the dispatch latency is this path). Without one,
        it waits in memory for the next free slot."""
        if task_id in self._running:
            return
        if self._paused or not self._free:
            self._waiting[task_id] = None
            return
        self._take(task_id)

    def _take(self, task_id: str) -> bool:
        try:
            task, last_seq = self._facade.load_task(task_id)
            if task is None or task.status != "queued" or self._reserved(task):
                return False
            lst = self._facade.load_list(task.list_id)
        except Exception as exc:  # NATS away for a moment: deferred, never a crash
            log.warning("could not read task %s (%s); it waits for the next scan", task_id[:8], exc)
            return False
        return self._claim(task, last_seq, lst)

    def _take_waiting(self) -> None:
        """Tasks seen queued while every slot was busy, first queued first, from the log."""
        while self._free and self._waiting and not self._paused:
            task_id = next(iter(self._waiting))
            del self._waiting[task_id]
            if task_id not in self._running:
                self._take(task_id)

    def _settle(self, task_id: str, holder: str | None = None) -> None:
        try:
            settle_orphan(self._facade, task_id, self.node_id, holder)
        except Exception:
            log.exception("could not settle task %s; will try again", task_id[:8])

    def _claim(self, task: TaskState, last_seq: int, lst: ListState | None) -> bool:
        if not self._facade.connected:
            return False  # no new runs while NATS is away; told again when it is back
        slot = self._free[0]
        correlation_id = ev.new_event_id()
        origin = ev.Origin(
            node_id=self.node_id, correlation_id=correlation_id, actor=f"node:{self.node_id}"
        )
        claimed = ev.envelop(ev.TaskClaimed(node_id=self.node_id, slot=slot), task.id, origin)
        try:
            seq = self._facade.append([claimed], last_seq)[-1]
        except ev.ConcurrencyError:
            return False  # someone else changed it first; the projection will tell us more
        except Exception as exc:
            # Unknown whether it was stored: if it was, the next scan finds the task held by
            # this node without a slot and settles it.
            log.warning("claim of task %s failed: %s", task.id[:8], exc)
            return False
        self._free.pop(0)
        self._running[task.id] = slot
        held = fold_task(task, claimed, seq)
        claim = Claim(task=held, list=lst, claim_seq=seq, correlation_id=correlation_id)
        try:
            self._slots[slot].tell(Assign(claim))
        except pykka.ActorDeadError:
            # The slot died between being free and now: the claim is settled as an orphan.
            del self._running[task.id]
        return True
