"""Settling tasks held by no running slot: this node's after a crash or a lost claim reply,
and those of a node whose heartbeat expired (claudedo_actors/node/presence.py).

The task is folded from the log, not from the projection. Processes of its unfinished runs are
killed (found by the run mark their environment carries), the runs are finished with cause
`worker_lost`, and the task is re-queued once (its next run resumes the lost session), or
failed when the lost run was already that retry, or cancelled when a cancel was asked.
"""

from __future__ import annotations

import logging

import events as ev
from claudedo_actors.agent.process import kill_run
from claudedo_actors.runner.ports import TaskLog
from claudedo_actors.runner.run import run_mark
from projections import TaskState

log = logging.getLogger("claudedo.recovery")

LOST = "The node stopped during the run (it crashed or was killed)."
LOST_OTHER = "Node {node} stopped answering during the run (its heartbeat expired)."


def settle_orphan(
    facade: TaskLog, task_id: str, node_id: str, holder: str | None = None
) -> str | None:
    """Settle one task held by `holder` (default: this node, `node_id`); returns what was
    done ('requeued', 'failed', 'cancelled') or None."""
    holder = holder or node_id
    state, last = facade.load_task(task_id, leader=True)
    if state is None or state.claimed_by != holder or state.status not in ("claimed", "running"):
        return None  # settled meanwhile, or not the holder's
    lost = LOST if holder == node_id else LOST_OTHER.format(node=holder)
    events: list[ev.Event] = []
    for run in state.runs:
        if run.finished_at is None:
            killed = kill_run(run_mark(task_id, run.run_number))
            if killed:
                log.warning("killed %d leftover process(es) of task %s", killed, task_id[:8])
            events.append(
                ev.RunFinished(
                    run_number=run.run_number, success=False, cause="worker_lost", error=lost
                )
            )
    outcome, terminal = _decide(state, lost)
    events.append(terminal)
    origin = ev.Origin(node_id=node_id, correlation_id=ev.new_event_id(), actor=f"node:{node_id}")
    envs = [ev.envelop(e, task_id, origin) for e in events]
    try:
        facade.append(envs, last)
    except ev.ConcurrencyError:
        return None  # it moved: the next scan looks again
    whose = "this node" if holder == node_id else f"lost node {holder}"
    log.warning("task %s was held by %s without a slot: %s", task_id[:8], whose, outcome)
    return outcome


def _decide(state: TaskState, lost: str) -> tuple[str, ev.Event]:
    if state.cancel_requested:
        return "cancelled", ev.TaskCancelled()
    last = state.runs[-1] if state.runs else None
    if last is not None and last.is_retry and last.finished_at is None:
        return "failed", ev.TaskFailed(error=lost, cause="worker_lost")
    return "requeued", ev.TaskRequeued(reason="the node that ran it stopped")
