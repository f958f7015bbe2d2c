"""Settling tasks held by no running slot: this node's after a crash or a lost claim reply,
and those of a node whose heartbeat expired (claudedo_actors/node/presence.py).

The task is folded from the log, not from the projection. Processes of its unfinished runs are
killed (found by the run mark their environment carries), the runs are finished with cause
`worker_lost`, and the policy (runner/policy.py) settles the task: re-queued when it has a
run to make (its next run resumes the lost session) or a succeeded run's work to commit,
failed when the lost run was already the retry, cancelled when a cancel was asked.
"""

from __future__ import annotations

import logging

import events as ev
from claudedo_actors.agent.process import kill_run
from claudedo_actors.runner import policy
from claudedo_actors.runner.ports import TaskLog
from claudedo_actors.runner.run import run_mark
from projections import fold_task

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
    origin = ev.Origin(node_id=node_id, correlation_id=ev.new_event_id(), actor=f"node:{node_id}")
    envs = [ev.envelop(e, task_id, origin) for e in events]
    after = state
    for env in envs:
        after = fold_task(after, env, last)
    terminal = policy.settle_lost(after, facade.load_list(state.list_id))
    outcome = {"TaskCancelled": "cancelled", "TaskRequeued": "requeued"}.get(
        type(terminal).__name__, "failed"
    )
    envs.append(ev.envelop(terminal, task_id, origin))
    try:
        facade.append(envs, last)
    except ev.ConcurrencyError:
        return None  # it moved: the next scan looks again
    whose = "this node" if holder == node_id else f"lost node {holder}"
    log.warning("task %s was held by %s without a slot: %s", task_id[:8], whose, outcome)
    return outcome


REVIEW_LOST = "node {node} stopped during the {action}; run it again to finish it"


def end_lost_review(facade: TaskLog, task_id: str, node_id: str, holder: str) -> bool:
    """End a merge or discard that `holder` began and can no longer finish (it stopped):
    ReviewEnded, guarded, so that the task can be reviewed, queued or continued again. A
    merge or discard run again finds what git already did (both are idempotent)."""
    state, last = facade.load_task(task_id, leader=True)
    if state is None or state.review is None or state.review_node != holder:
        return False
    error = REVIEW_LOST.format(node=holder, action=state.review)
    origin = ev.Origin(node_id=node_id, correlation_id=ev.new_event_id(), actor=f"node:{node_id}")
    env = ev.envelop(ev.ReviewEnded(action=state.review, error=error), task_id, origin)
    try:
        facade.append([env], last)
    except ev.ConcurrencyError:
        return False  # it moved: the next scan looks again
    log.warning("task %s: %s", task_id[:8], error)
    return True
