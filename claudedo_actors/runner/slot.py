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
from claudedo_actors.agent.run_output import log_path
from claudedo_actors.agent.stream_json import RunOutcome
from claudedo_actors.git import worktrees as wt
from claudedo_actors.runner import faults, policy
from claudedo_actors.runner.messages import (
    Assign,
    CancelRun,
    CancelTask,
    Claim,
    Holding,
    RunEnded,
    StopForShutdown,
)
from claudedo_actors.runner.ports import Folders, TaskLog
from claudedo_actors.runner.run import RunActor, RunSpec, outcome_without_result
from claudedo_actors.runner.spool import Spool
from claudedo_actors.runner.task_writer import CancelSeen, LostTask, TaskWriter
from events.errors import ClaudeDoError
from projections import ListState, TaskState, WorktreeState

log = logging.getLogger("claudedo.slot")


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
    run_open: bool = False  # RunStarted appended, RunFinished not yet
    cancelled: bool = False
    run_ref: pykka.ActorRef[Any] | None = None

    @property
    def task(self) -> TaskState:
        """The task as folded from the claim and every event this slot appended since."""
        return self.writer.state


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
            case Holding():
                return self._job.task.id if self._job is not None else None
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
            claim.task,
            claim.claim_seq,
            claim.correlation_id,
            on_cancel=lambda: me.tell(CancelTask(task_id)),
            spool=Spool(self.ctx.home.spool_dir),
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
        error = f"Internal error: {exc_value}"
        outcome = self._stop_run(job) if job is not None else None
        # Replaced first, so the queue hands the next task to the new slot.
        self.ctx.on_crash(self.number, f"{exc_type.__name__}: {exc_value}")
        if job is None:
            return
        try:
            if job.run_open:
                ended = outcome_without_result("agent_error", error)
                if outcome is not None:
                    ended = msgspec.structs.replace(outcome, cause="agent_error", error=error)
                job.writer.append(self._finished(job, ended))
        except Exception:
            log.exception("slot %d could not record run %d", self.number, job.run_number)
        self._terminal(job, ev.TaskFailed(error=error, cause="agent_error"))

    def on_stop(self) -> None:
        """The node stops: end the run, record it, and give the task back to the queue."""
        job = self._job
        if job is None:
            return
        outcome = self._stop_run(job)
        try:
            if job.run_open:
                lost = outcome or outcome_without_result("worker_lost", policy.NODE_STOPPED)
                job.writer.append(self._finished(job, lost))
            if job.cancelled:
                self._terminal(job, ev.TaskCancelled())
                return
            end = policy.settle_lost(job.task, job.claim.list)
            if isinstance(end, ev.TaskRequeued):
                end = ev.TaskRequeued(reason="the node stopped")
            job.writer.append(end)
        except LostTask as exc:
            log.warning("slot %d: %s", self.number, exc)
        except Exception:
            log.exception("slot %d could not settle task %s", self.number, job.task.id[:8])
        self._job = None

    # --- the task ------------------------------------------------------------------------

    def _begin(self, job: _Job) -> None:
        lst = job.claim.list
        if lst is None:
            self._carry_out(job)  # the policy fails it: list not found
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
        self._carry_out(job)

    def _workdir(self, job: _Job, lst: ListState) -> list[ev.Event]:
        """The task's worktree (or sandbox): reused when it exists, made otherwise. A worktree
        made again starts from the task's earlier work: its branch when only the folder went
        away, the commit its discard kept after a discard."""
        task = job.task
        existing = task.worktree
        if existing is not None and existing.status != "discarded" and self._ours(existing):
            job.workdir, job.kind = existing.path, existing.kind
            if existing.kind == "worktree" and lst.dir:
                job.workdir = _inside(existing.path, existing.repo, lst.dir)
            return []
        if lst.dir:
            repo, restore, base = wt.toplevel(lst.dir), None, None
            if existing is not None and existing.kind == "worktree" and existing.base_commit:
                repo = existing.repo or repo
                base = (existing.base_commit, existing.base_branch)
                if existing.status == "discarded":
                    restore = existing.kept_ref
            path = self.ctx.home.worktrees_dir / task.id
            made = wt.create_worktree(repo, path, task.id, restore=restore, base=base)
            job.workdir, job.kind = _inside(made.path, repo, lst.dir), "worktree"
            return [
                ev.WorktreeCreated(
                    path=made.path,
                    branch=made.branch,
                    base_branch=made.base_branch,
                    base_commit=made.base_commit,
                    repo=repo,
                )
            ]
        path = self.ctx.home.sandboxes_dir / task.id
        path.mkdir(parents=True, exist_ok=True)
        job.workdir, job.kind = str(path), "sandbox"
        return [ev.SandboxCreated(path=str(path))]

    def _ours(self, tree: WorktreeState) -> bool:
        """Whether the recorded folder is the task's and is there: its repository's worktree
        on the task's branch (made by this node or another on this machine), or a sandbox
        folder named after the task. A path from the log is never worked in otherwise."""
        path = Path(tree.path)
        if not path.is_dir():
            return False
        if tree.kind == "sandbox":
            return path.name == tree.task_id and path.parent.name == "sandboxes"
        if not tree.repo or not tree.branch:
            own = (self.ctx.home.worktrees_dir / tree.task_id).resolve()
            return path.resolve() == own  # recorded before the repository was
        try:
            registered = wt.worktree_of(tree.repo, tree.branch)
        except ClaudeDoError:
            return False
        return registered is not None and Path(registered).resolve() == path.resolve()

    def _carry_out(self, job: _Job) -> None:
        """Do what the policy says comes next for the task, as folded now."""
        if job.cancelled:
            self._terminal(job, ev.TaskCancelled())
            return
        workdir = policy.Workdir(job.workdir, bool(job.workdir) and Path(job.workdir).is_dir())
        step = policy.next_step(job.task, job.claim.list, self.ctx.node_id, workdir)
        match step:
            case policy.Settle(event=event):
                self._terminal(job, event)
            case policy.Complete():
                self._complete(job, step)
            case policy.StartRun():
                self._start_run(job, step)

    def _start_run(self, job: _Job, step: policy.StartRun) -> None:
        task, config = job.task, step.config
        try:
            ac.check_permission_mode(config.permission_mode, self.ctx.env, self.ctx.euid)
            binary = ac.resolve_binary(self.ctx.claude_bin)
            argv = ac.build_argv(binary, config, step.resume_session_id)
        except ClaudeDoError as exc:
            self._terminal(job, ev.TaskFailed(error=str(exc), cause="spawn_failed"))
            return
        job.run_number = task.run_count + 1
        path = log_path(self.ctx.home.logs_dir, task.id, job.run_number)
        job.writer.append(
            *([step.session_lost] if step.session_lost is not None else []),
            ev.RunStarted(
                run_number=job.run_number,
                is_retry=step.is_retry,
                is_continue=step.is_continue,
                node_id=self.ctx.node_id,
                slot=self.number,
                workdir=job.workdir,
                prompt=step.prompt,
                model=config.model,
                resume_session_id=step.resume_session_id,
                log_path=str(path),
            ),
        )
        job.run_open = True
        faults.at("slot.run_started")
        spec = RunSpec(
            task_id=task.id,
            run_number=job.run_number,
            argv=tuple(argv),
            cwd=job.workdir,
            prompt=step.prompt,
            log_path=str(path),
            timeout_s=config.timeout_s,
            node_id=self.ctx.node_id,
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
        faults.at("node.after_run_finished")
        faults.at(f"node.after_run_finished.{job.run_number}")
        if outcome.cause == "cancelled":
            job.cancelled = True
        self._carry_out(job)

    def _complete(self, job: _Job, step: policy.Complete) -> None:
        """Commit what the agent changed since the last recorded commit, then done."""
        done: list[ev.Event] = []
        tree = job.task.worktree
        if job.kind == "worktree" and tree is not None and tree.head_commit is not None:
            try:
                stats = wt.commit_changes(job.workdir, tree.head_commit, _commit_message(job.task))
            except ClaudeDoError as exc:
                self._terminal(
                    job, ev.TaskFailed(error=f"Commit failed: {exc}", cause="commit_failed")
                )
                return
            if stats is not None:
                done.append(
                    ev.WorktreeCommitted(
                        run_number=step.run_number,
                        commit=stats.commit,
                        files_changed=stats.files_changed,
                        insertions=stats.insertions,
                        deletions=stats.deletions,
                    )
                )
        self._terminal(job, *done, ev.TaskCompleted(result=step.result))

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
            outcome, success=False, cause="worker_lost", error=policy.NODE_STOPPED
        )

    def _free(self) -> None:
        self._job = None
        self.ctx.on_free(self.number)


def _inside(worktree: str, repo: str | None, list_dir: str) -> str:
    """Where the agent works in the worktree: the sub-folder the list's dir is of its
    repository (made if the branch does not have it), else the worktree's top."""
    try:
        rel = Path(list_dir).resolve().relative_to(Path(repo or list_dir).resolve())
    except ValueError:
        return worktree  # the list moved to another repository: the worktree's top
    if rel == Path("."):
        return worktree
    folder = Path(worktree) / rel
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _commit_message(task: TaskState) -> str:
    return f"{task.title}\n\nClaudeDo task {task.id}"


__all__ = ["RunnerContext", "SlotActor"]
