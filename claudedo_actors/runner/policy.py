"""What the runner does next with a claimed task, decided from the task's folded state alone.

Pure functions, no I/O: the Slot actor asks `next_step` when it holds a task and again after
each run it recorded, and carries out the step; recovery asks `settle_lost` for a task whose
node is gone. Because the answer depends only on the fold (and the machine's facts passed
in), a node that crashed anywhere between two events decides the same as one that did not:
a run that succeeded is never run again, and the automatic retry is made at most once.

The rules (DESIGN.md, reference behaviour 7-11):
- An attempt is what follows the user's queue or continue; its runs are numbered above
  `TaskState.runs_before_attempt`.
- A run its node lost before the agent opened a session did no work: it does not count.
- A failed first run that opened a session is retried once, resuming that session, with
  what it left of the task's budget and turns; not after a cancel or an exhausted budget.
- A continue resumes the latest earlier run's session and is not retried.
- A session is resumed only on the node that keeps it, in the folder it ran in; elsewhere
  the run starts a fresh session told what the lost one said (`SessionLost`).
"""

from __future__ import annotations

import msgspec

import events as ev
from claudedo_actors.agent import prompts
from claudedo_actors.agent.command import AgentConfig, resolve_config
from projections import ListState, RunState, TaskState

# Causes after which the automatic retry would not help or would overspend.
NO_RETRY_CAUSES = frozenset({"cancelled", "budget", "log_failed"})
NODE_STOPPED = "The node stopped during the run."
LIST_NOT_FOUND = "List not found."
NO_PREVIOUS_RUN = "No previous run to continue."
NO_SESSION = "Previous run has no session ID — cannot resume."


class Workdir(msgspec.Struct, frozen=True):
    """The task's working folder on this node: where it is, and whether it is there."""

    path: str
    exists: bool


class StartRun(msgspec.Struct, frozen=True, kw_only=True):
    """Start the next run with this prompt, resuming `resume_session_id` when set."""

    prompt: str
    resume_session_id: str | None
    is_retry: bool = False
    is_continue: bool = False
    config: AgentConfig
    session_lost: ev.SessionLost | None = None


class Complete(msgspec.Struct, frozen=True, kw_only=True):
    """Run `run_number` succeeded: commit what changed in a worktree, then the task is done."""

    run_number: int
    result: str | None


class Settle(msgspec.Struct, frozen=True, kw_only=True):
    """End the task with this terminal event."""

    event: ev.TaskFailed | ev.TaskCancelled


Step = StartRun | Complete | Settle


def attempt_runs(task: TaskState) -> list[RunState]:
    """The runs of the current attempt that count: a run lost before its session opened
    did nothing and is left out."""
    return [r for r in task.runs if r.run_number > task.runs_before_attempt and not _void(r)]


def next_step(
    task: TaskState, lst: ListState | None, node_id: str, workdir: Workdir | None
) -> Step:
    """What to do with `task`, claimed by `node_id`, working in `workdir` (None: no slot
    holds it, so nothing can be resumed)."""
    if task.cancel_requested:
        return Settle(event=ev.TaskCancelled())
    if lst is None:
        return Settle(event=ev.TaskFailed(error=LIST_NOT_FOUND, cause="list_not_found"))
    runs = attempt_runs(task)
    last = runs[-1] if runs else None
    if last is not None and last.success:
        return Complete(run_number=last.run_number, result=last.result)
    if last is not None and _lost(last) == "" and last.cause == "cancelled":
        return Settle(event=ev.TaskCancelled())
    if task.follow_up_prompt is not None:
        return _continue_step(task, lst, node_id, workdir, last)
    if last is None:
        prompt = prompts.task_prompt(task.title, task.description, task.subtasks)
        return StartRun(prompt=prompt, resume_session_id=None, config=resolve_config(task, lst))
    return _after_failed_run(task, lst, node_id, workdir, last)


def settle_lost(task: TaskState, lst: ListState | None) -> ev.Event:
    """The terminal event for a task whose node is gone (its open runs already recorded as
    lost), or TaskRequeued when it still has a run to make."""
    step = next_step(task, lst, "", None)
    if isinstance(step, Settle):
        return step.event
    return ev.TaskRequeued(reason="the node that ran it stopped")


def session_node(task: TaskState) -> str | None:
    """The node keeping the session that the next run of a queued task resumes, if any: the
    queue leaves such a task to that node while it lives."""
    run = _run_to_resume(task)
    return run.node_id if run is not None else None


def left_for_retry(
    config: AgentConfig, cost_usd: float | None, turns: int | None
) -> AgentConfig | None:
    """The settings of an automatic retry: the task's budget and turn limit, less what the
    run it retries spent (Claude Code counts both per invocation, also on a resumed
    session), so that a run and its retry together keep to the limits set. None: nothing is
    left, no retry. A spend the run did not report counts as none."""
    budget, max_turns = config.max_budget_usd, config.max_turns
    if budget is not None and cost_usd:
        budget -= cost_usd
        if budget <= 0:
            return None
    if max_turns is not None and turns:
        max_turns -= turns
        if max_turns <= 0:
            return None
    return msgspec.structs.replace(config, max_budget_usd=budget, max_turns=max_turns)


# --- the steps ---------------------------------------------------------------------------


def _continue_step(
    task: TaskState, lst: ListState, node_id: str, workdir: Workdir | None, last: RunState | None
) -> Step:
    """A continue: resume the latest earlier run's session with the follow-up; not retried.
    A continue lost by its node after its session opened resumes its own session."""
    follow_up = task.follow_up_prompt
    assert follow_up is not None
    config = resolve_config(task, lst)
    if last is not None and _lost(last) == "":
        return Settle(event=_failed(last))
    source = _run_to_resume(task)
    if source is None:
        earlier = [r for r in task.runs if not _void(r)]
        error = NO_SESSION if earlier else NO_PREVIOUS_RUN
        return Settle(event=ev.TaskFailed(error=error, cause="agent_error"))
    if _resumable(source, node_id, workdir):
        return StartRun(
            prompt=follow_up, resume_session_id=source.session_id, is_continue=True, config=config
        )
    return _fresh(task, source, follow_up, node_id, config, is_continue=True)


def _after_failed_run(
    task: TaskState, lst: ListState, node_id: str, workdir: Workdir | None, last: RunState
) -> Step:
    """The latest run of a queued attempt failed (or its node lost it): retry once, or fail."""
    lost = _lost(last)
    if last.is_retry or not last.session_id or (last.cause in NO_RETRY_CAUSES and not lost):
        return Settle(event=_failed(last))
    left = left_for_retry(resolve_config(task, lst), last.cost_usd, last.turn_count)
    if left is None:
        return Settle(event=_failed(last))
    if _resumable(last, node_id, workdir):
        prompt = prompts.retry_prompt(last.error or (lost or "unknown error"))
        return StartRun(
            prompt=prompt, resume_session_id=last.session_id, is_retry=True, config=left
        )
    return _fresh(task, last, None, node_id, left, is_retry=True)


def _fresh(
    task: TaskState,
    source: RunState,
    follow_up: str | None,
    node_id: str,
    config: AgentConfig,
    is_retry: bool = False,
    is_continue: bool = False,
) -> StartRun:
    """Run the task again in a new session: the task, what the lost run said, and the
    follow-up; the lost session is recorded (SessionLost) with the new run."""
    base = prompts.task_prompt(task.title, task.description, task.subtasks)
    prompt = prompts.fresh_session_prompt(base, source.result, source.error, follow_up)
    assert source.session_id is not None
    if source.node_id != node_id:
        reason = f"the session is kept by node {source.node_id}, which is gone"
    else:
        reason = f"the folder the session ran in ({source.workdir}) is gone"
    lost = ev.SessionLost(
        run_number=source.run_number,
        session_id=source.session_id,
        node_id=source.node_id,
        reason=reason,
    )
    return StartRun(
        prompt=prompt, resume_session_id=None, is_retry=is_retry, is_continue=is_continue,
        config=config, session_lost=lost,
    )  # fmt: skip


# --- facts of runs -----------------------------------------------------------------------


def _void(run: RunState) -> bool:
    """Lost by its node before the agent opened a session: the agent did nothing."""
    return run.session_id is None and bool(_lost(run))


def _lost(run: RunState) -> str:
    """Why the run's node lost it ("" when the run ended by itself)."""
    if run.finished_at is None:
        return NODE_STOPPED  # still open in the fold: its node is gone mid-run
    if run.cause == "worker_lost":
        return run.error or NODE_STOPPED
    return ""


def _failed(run: RunState) -> ev.TaskFailed:
    lost = _lost(run)
    if lost:
        return ev.TaskFailed(error=lost, cause="worker_lost")
    return ev.TaskFailed(error=run.error or "failed", cause=run.cause or "agent_error")


def _run_to_resume(task: TaskState) -> RunState | None:
    """The run whose session the next run of `task` resumes, if it resumes one."""
    runs = attempt_runs(task)
    last = runs[-1] if runs else None
    if task.follow_up_prompt is not None:
        if last is not None:
            return last if last.session_id and _lost(last) else None
        earlier = [r for r in task.runs if r.run_number <= task.runs_before_attempt]
        earlier = [r for r in earlier if not _void(r)]
        return earlier[-1] if earlier and earlier[-1].session_id else None
    if last is not None and last.session_id and not last.is_retry and not last.success:
        return last  # the automatic retry resumes it
    return None


def _resumable(run: RunState, node_id: str, workdir: Workdir | None) -> bool:
    """Whether `run`'s session can be resumed here: Claude Code keeps a session on the
    machine and HOME of its node, for its working directory."""
    return bool(
        run.session_id
        and workdir is not None
        and workdir.exists
        and run.node_id == node_id
        and run.workdir == workdir.path
    )


__all__ = [
    "AgentConfig",
    "Complete",
    "Settle",
    "StartRun",
    "Step",
    "Workdir",
    "attempt_runs",
    "left_for_retry",
    "next_step",
    "session_node",
    "settle_lost",
]
