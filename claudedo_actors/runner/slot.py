"""A Slot actor runs one claimed task at a time: workdir, runs (retry, continue), commit, end.

Every path ends in a terminal event (TaskCompleted, TaskFailed, TaskCancelled, or TaskRequeued
when the node stops), and the slot is freed on every path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pykka

import events as ev
from claudedo_actors.agent import command as ac
from claudedo_actors.agent import prompts
from claudedo_actors.agent.run_output import log_path
from claudedo_actors.agent.stream_json import RunOutcome
from claudedo_actors.git import worktrees as wt
from claudedo_actors.runner.messages import (
    Assign,
    CancelRun,
    CancelTask,
    Claim,
    RunEnded,
    StopForShutdown,
)
from claudedo_actors.runner.ports import Folders, TaskLog
from claudedo_actors.runner.run import RunActor, RunSpec, outcome_without_result
from claudedo_actors.runner.task_writer import CancelSeen, LostTask, TaskWriter
from events.errors import ClaudeDoError
from projections import ListState, RunState, TaskState

log = logging.getLogger("claudedo.slot")

# Causes after which the automatic retry would not help or would overspend.
_NO_RETRY_CAUSES = frozenset({"cancelled", "budget"})
NODE_STOPPED = "The node stopped during the run."


@dataclass
class RunnerContext:
    """What every slot of a node shares."""

    node_id: str
    home: Folders
    facade: TaskLog
    claude_bin: str | None
    env: Mapping[str, str]
    on_free: Callable[[int], None]
    on_crash: Callable[[int, str], None]
    on_line: Callable[[str, int, bytes], None] | None = None
    euid: int = field(default_factory=os.geteuid)


@dataclass
class _Job:
    claim: Claim
    writer: TaskWriter
    workdir: str = ""
    kind: str = "sandbox"
    run_number: int = 0
    retry_allowed: bool = True
    head_before_run: str | None = None
    run_open: bool = False  # RunStarted appended, RunFinished not yet
    run_is_retry: bool = False  # the latest run is the task's automatic retry
    cancelled: bool = False
    run_ref: pykka.ActorRef[Any] | None = None

    @property
    def task(self) -> TaskState:
        return self.claim.task


class SlotActor(pykka.ThreadingActor):
    """Slot number `number` of this node."""

    def __init__(self, number: int, ctx: RunnerContext) -> None:
        super().__init__()
        self.number = number
        self.ctx = ctx
        self._job: _Job | None = None

    # --- messages ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case Assign(claim=claim):
                self._assign(claim)
            case CancelTask(task_id=task_id):
                self._cancel(task_id)
            case RunEnded(run_number=number, outcome=outcome):
                self._run_ended(number, outcome)
            case _:
                return super().on_receive(message)
        return None

    def _assign(self, claim: Claim) -> None:
        if self._job is not None:  # never happens: the queue only hands work to free slots
            log.error("slot %d got task %s while busy", self.number, claim.task.id[:8])
            return
        me = self.actor_ref
        task_id = claim.task.id
        writer = TaskWriter(
            self.ctx.facade,
            task_id,
            self.ctx.node_id,
            claim.claim_seq,
            claim.correlation_id,
            on_cancel=lambda: me.tell(CancelTask(task_id)),
        )
        job = self._job = _Job(claim, writer)
        try:
            self._begin(job)
        except LostTask as exc:
            log.warning("slot %d: %s", self.number, exc)
            self._free()

    def _cancel(self, task_id: str) -> None:
        job = self._job
        if job is None or job.task.id != task_id or job.cancelled:
            return
        job.cancelled = True
        if job.run_ref is not None:
            job.run_ref.tell(CancelRun())

    def _run_ended(self, run_number: int, outcome: RunOutcome) -> None:
        job = self._job
        if job is None or run_number != job.run_number:
            return
        job.run_ref = None
        try:
            self._after_run(job, outcome)
        except LostTask as exc:
            log.warning("slot %d: %s", self.number, exc)
            self._free()

    # --- lifecycle -----------------------------------------------------------------------

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # Unexpected: logged once here, and the task still ends with a terminal event.
        job = self._job
        log.error("slot %d failed: %s", self.number, exc_value, exc_info=exc_value)
        if job is not None:
            self._stop_run(job)
        # Replaced first, so the queue hands the next task to the new slot.
        self.ctx.on_crash(self.number, f"{exc_type.__name__}: {exc_value}")
        if job is not None:
            self._terminal(
                job, ev.TaskFailed(error=f"Internal error: {exc_value}", cause="agent_error")
            )

    def on_stop(self) -> None:
        """The node stops: end the run, record it, and give the task back to the queue."""
        job = self._job
        if job is None:
            return
        outcome = self._stop_run(job)
        try:
            lost_retry = job.run_open and job.run_is_retry
            if job.run_open:
                lost = outcome or outcome_without_result("worker_lost", NODE_STOPPED)
                job.writer.append(self._finished(job, lost))
            if job.cancelled:
                self._terminal(job, ev.TaskCancelled())
            elif lost_retry:
                # As when a node dies (recovery): the automatic retry was made and is lost.
                self._terminal(job, ev.TaskFailed(error=NODE_STOPPED, cause="worker_lost"))
            else:
                job.writer.append(ev.TaskRequeued(reason="the node stopped"))
        except LostTask as exc:
            log.warning("slot %d: %s", self.number, exc)
        except Exception:
            log.exception("slot %d could not settle task %s", self.number, job.task.id[:8])
        self._job = None

    # --- the task ------------------------------------------------------------------------

    def _begin(self, job: _Job) -> None:
        lst = job.claim.list
        if lst is None:
            self._terminal(job, ev.TaskFailed(error="List not found.", cause="list_not_found"))
            return
        try:
            started = self._workdir(job, lst)
        except ClaudeDoError as exc:
            self._terminal(
                job,
                ev.TaskFailed(error=f"Worktree creation failed: {exc}", cause="worktree_failed"),
            )
            return
        job.writer.append(
            ev.TaskStarted(node_id=self.ctx.node_id, slot=self.number, workdir=job.workdir),
            *started,
        )
        self._first_run(job)

    def _workdir(self, job: _Job, lst: ListState) -> list[ev.Event]:
        """The task's worktree (or sandbox): reused when it exists, made otherwise."""
        task = job.task
        existing = task.worktree
        if existing is not None and existing.status != "discarded" and Path(existing.path).is_dir():
            job.workdir, job.kind = existing.path, existing.kind
            return []
        if lst.dir:
            path = self.ctx.home.worktrees_dir / task.id
            made = wt.create_worktree(lst.dir, path, task.id)
            job.workdir, job.kind = made.path, "worktree"
            job.head_before_run = made.base_commit
            return [
                ev.WorktreeCreated(
                    path=made.path,
                    branch=made.branch,
                    base_branch=made.base_branch,
                    base_commit=made.base_commit,
                )
            ]
        path = self.ctx.home.sandboxes_dir / task.id
        path.mkdir(parents=True, exist_ok=True)
        job.workdir, job.kind = str(path), "sandbox"
        return [ev.SandboxCreated(path=str(path))]

    def _first_run(self, job: _Job) -> None:
        task = job.task
        last = task.runs[-1] if task.runs else None
        if task.follow_up_prompt is not None:
            # A continue resumes the latest run's session; it is not retried.
            if last is None or not last.session_id:
                why = (
                    "No previous run to continue."
                    if last is None
                    else ("Previous run has no session ID — cannot resume.")
                )
                self._terminal(job, ev.TaskFailed(error=why, cause="agent_error"))
                return
            job.retry_allowed = False
            if self._resumable(last, job):
                self._start_run(job, task.follow_up_prompt, last.session_id, is_continue=True)
            else:
                self._fresh_session(job, last, task.follow_up_prompt, is_continue=True)
            return
        if last is not None and ac.retries_lost_run(last):
            # The node stopped during the last run: this run is its one automatic retry.
            job.retry_allowed = False
            left = self._left_for_retry(job, last.cost_usd, last.turn_count)
            if left is None:
                error = last.error or NODE_STOPPED
                self._terminal(job, ev.TaskFailed(error=error, cause=last.cause or "worker_lost"))
            elif self._resumable(last, job):
                prompt = prompts.retry_prompt(last.error or NODE_STOPPED)
                self._start_run(job, prompt, last.session_id, is_retry=True, config=left)
            else:
                self._fresh_session(job, last, None, is_retry=True, config=left)
            return
        prompt = prompts.task_prompt(task.title, task.description, task.subtasks)
        self._start_run(job, prompt, None)

    def _left_for_retry(
        self, job: _Job, cost_usd: float | None, turns: int | None
    ) -> ac.AgentConfig | None:
        config = ac.resolve_config(job.task, job.claim.list)
        return ac.left_for_retry(config, cost_usd, turns)

    def _resumable(self, last: RunState, job: _Job) -> bool:
        """Whether this slot can resume `last`'s session: Claude Code keeps a session on the
        machine and HOME of its node, for its working directory."""
        return bool(
            last.session_id
            and last.node_id == self.ctx.node_id
            and last.workdir == job.workdir
            and Path(job.workdir).is_dir()
        )

    def _fresh_session(
        self,
        job: _Job,
        last: RunState,
        follow_up: str | None,
        is_retry: bool = False,
        is_continue: bool = False,
        config: ac.AgentConfig | None = None,
    ) -> None:
        """Run the task again in a new session: the task, what the lost run said, and the
        follow-up; the lost session is recorded (SessionLost) with the new run."""
        task = job.task
        base = prompts.task_prompt(task.title, task.description, task.subtasks)
        prompt = prompts.fresh_session_prompt(base, last.result, last.error, follow_up)
        lost = None
        if last.session_id:
            if last.node_id != self.ctx.node_id:
                reason = f"the session is kept by node {last.node_id}, which is gone"
            else:
                reason = f"the folder the session ran in ({last.workdir}) is gone"
            lost = ev.SessionLost(
                run_number=last.run_number,
                session_id=last.session_id,
                node_id=last.node_id,
                reason=reason,
            )
        self._start_run(
            job, prompt, None, is_retry=is_retry, is_continue=is_continue, session_lost=lost,
            config=config,
        )  # fmt: skip

    def _start_run(
        self,
        job: _Job,
        prompt: str,
        resume: str | None,
        is_retry: bool = False,
        is_continue: bool = False,
        session_lost: ev.SessionLost | None = None,
        config: ac.AgentConfig | None = None,
    ) -> None:
        """`config`: the run's settings when not the task's own (a retry's are less what the
        run it retries spent)."""
        if job.cancelled:
            self._terminal(job, ev.TaskCancelled())
            return
        task = job.task
        if config is None:
            config = ac.resolve_config(task, job.claim.list)
        try:
            ac.check_permission_mode(config.permission_mode, self.ctx.env, self.ctx.euid)
            binary = ac.resolve_binary(self.ctx.claude_bin)
            argv = ac.build_argv(binary, config, resume)
        except ClaudeDoError as exc:
            self._terminal(job, ev.TaskFailed(error=str(exc), cause="spawn_failed"))
            return
        job.run_number = max(job.run_number, task.run_count) + 1
        path = log_path(self.ctx.home.logs_dir, task.id, job.run_number)
        if job.kind == "worktree" and job.head_before_run is None:
            job.head_before_run = wt.head_of(job.workdir)
        job.writer.append(
            *([session_lost] if session_lost is not None else []),
            ev.RunStarted(
                run_number=job.run_number,
                is_retry=is_retry,
                is_continue=is_continue,
                node_id=self.ctx.node_id,
                slot=self.number,
                workdir=job.workdir,
                prompt=prompt,
                model=config.model,
                resume_session_id=resume,
                log_path=str(path),
            ),
        )
        job.run_open = True
        job.run_is_retry = is_retry
        spec = RunSpec(
            task_id=task.id,
            run_number=job.run_number,
            argv=tuple(argv),
            cwd=job.workdir,
            prompt=prompt,
            log_path=str(path),
            timeout_s=config.timeout_s,
        )
        me = self.actor_ref
        job.run_ref = RunActor.start(
            spec,
            job.writer,
            self.ctx.facade,
            self.ctx.env,
            lambda n, outcome: me.tell(RunEnded(n, outcome)),
            self.ctx.on_line,
        )

    def _after_run(self, job: _Job, outcome: RunOutcome) -> None:
        job.writer.append(self._finished(job, outcome))
        since, job.head_before_run = job.head_before_run, None  # the next run reads it anew
        if job.cancelled or outcome.cause == "cancelled":
            self._terminal(job, ev.TaskCancelled())
            return
        if outcome.success:
            done: list[ev.Event] = []
            if job.kind == "worktree" and since is not None:
                try:
                    stats = wt.commit_changes(job.workdir, since, _commit_message(job.task))
                except ClaudeDoError as exc:
                    self._terminal(
                        job, ev.TaskFailed(error=f"Commit failed: {exc}", cause="commit_failed")
                    )
                    return
                if stats is not None:
                    done.append(
                        ev.WorktreeCommitted(
                            run_number=job.run_number,
                            commit=stats.commit,
                            files_changed=stats.files_changed,
                            insertions=stats.insertions,
                            deletions=stats.deletions,
                        )
                    )
            self._terminal(job, *done, ev.TaskCompleted(result=outcome.result))
            return
        if job.retry_allowed and outcome.session_id and outcome.cause not in _NO_RETRY_CAUSES:
            job.retry_allowed = False
            # The retry gets what the run left of the task's limits; with nothing left, none.
            left = self._left_for_retry(job, outcome.cost_usd, outcome.turn_count)
            if left is not None:
                self._start_run(
                    job, prompts.retry_prompt(outcome.error or "unknown error"), outcome.session_id,
                    is_retry=True, config=left,
                )  # fmt: skip
                return
        self._terminal(
            job,
            ev.TaskFailed(error=outcome.error or "failed", cause=outcome.cause or "agent_error"),
        )

    def _finished(self, job: _Job, outcome: RunOutcome) -> ev.RunFinished:
        job.run_open = False
        fields = msgspec.structs.asdict(outcome)
        fields.pop("session_id")
        return ev.RunFinished(run_number=job.run_number, **fields)

    def _terminal(self, job: _Job, *events: ev.Event) -> None:
        """Append the task's last events (a cancel request seen meanwhile wins), free the slot."""
        try:
            try:
                if job.cancelled and not isinstance(events[-1], ev.TaskCancelled):
                    raise CancelSeen()
                job.writer.append(*events, unless_cancelled=True)
            except CancelSeen:
                kept = [e for e in events if isinstance(e, ev.WorktreeCommitted)]
                job.writer.append(*kept, ev.TaskCancelled())
        except LostTask as exc:
            log.warning("slot %d: %s", self.number, exc)
        finally:
            self._free()

    def _stop_run(self, job: _Job) -> RunOutcome | None:
        ref, job.run_ref = job.run_ref, None
        if ref is None or not ref.is_alive():
            return None
        try:
            outcome: RunOutcome | None = ref.ask(StopForShutdown(), block=True, timeout=60)
        except pykka.ActorDeadError:
            return None
        if outcome is None:
            return None
        return msgspec.structs.replace(
            outcome, success=False, cause="worker_lost", error=NODE_STOPPED
        )

    def _free(self) -> None:
        self._job = None
        self.ctx.on_free(self.number)


def _commit_message(task: TaskState) -> str:
    return f"{task.title}\n\nClaudeDo task {task.id}"


__all__ = ["RunnerContext", "SlotActor"]
