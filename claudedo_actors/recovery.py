"""Settling tasks this node claimed but no slot of it runs (a crash, a lost claim reply).

The task is folded from the log, not from the projection. Processes of its unfinished runs are
killed (found by the run mark their environment carries), the runs are finished with cause
`worker_lost`, and the task is re-queued once (its next run resumes the lost session), or
failed when the lost run was already that retry, or cancelled when a cancel was asked.
"""

from __future__ import annotations

import logging

import events as ev
from claudedo_actors.agent_process import kill_run
from claudedo_actors.log_facade import LogFacade
from claudedo_actors.run_actor import run_mark
from projections import TaskState

log = logging.getLogger("claudedo.recovery")

LOST = "The node stopped during the run (it crashed or was killed)."


def settle_orphan(facade: LogFacade, task_id: str, node_id: str) -> str | None:
    """Settle one task; returns what was done ('requeued', 'failed', 'cancelled') or None."""
    state, last = facade.load_task(task_id, leader=True)
    if state is None or state.claimed_by != node_id or state.status not in ("claimed", "running"):
        return None  # settled meanwhile, or not ours
    events: list[ev.Event] = []
    for run in state.runs:
        if run.finished_at is None:
            killed = kill_run(run_mark(task_id, run.run_number))
            if killed:
                log.warning("killed %d leftover process(es) of task %s", killed, task_id[:8])
            events.append(
                ev.RunFinished(
                    run_number=run.run_number, success=False, cause="worker_lost", error=LOST
                )
            )
    outcome, terminal = _decide(state)
    events.append(terminal)
    origin = ev.Origin(node_id=node_id, correlation_id=ev.new_event_id(), actor=f"node:{node_id}")
    envs = [ev.envelop(e, task_id, origin) for e in events]
    try:
        facade.append(envs, last)
    except ev.ConcurrencyError:
        return None  # it moved: the next scan looks again
    log.warning("task %s was held by this node without a slot: %s", task_id[:8], outcome)
    return outcome


def _decide(state: TaskState) -> tuple[str, ev.Event]:
    if state.cancel_requested:
        return "cancelled", ev.TaskCancelled()
    last = state.runs[-1] if state.runs else None
    if last is not None and last.is_retry and last.finished_at is None:
        return "failed", ev.TaskFailed(error=LOST, cause="worker_lost")
    return "requeued", ev.TaskRequeued(reason="the node that ran it stopped")
