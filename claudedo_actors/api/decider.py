"""Command handling: validate a request against the aggregate's folded state, decide events."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from msgspec import UNSET

import events as ev
from claudedo_actors.agent.command import check_permission_mode
from claudedo_actors.api import verbs as rq
from claudedo_actors.git.runner import git_ok, run_git
from events.errors import ClaudeDoError, Conflict, Invalid, NotFound
from projections import ListState, Projection, TaskState, refusal
from projections import queries as q

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")


@dataclass(frozen=True)
class Append:
    """Events of one aggregate, appended only if `guard` still ends at `expected_seq`."""

    envelopes: list[ev.Envelope]
    expected_seq: int | None
    guard: str | None = None


@dataclass(frozen=True)
class Plan:
    """What a command decided: appends, and how to build the reply once they are projected."""

    appends: list[Append]
    reply: Callable[[Projection], Any]


# --- validation that needs no state (runs outside the projector) -------------------------


def _text(value: str, what: str) -> str:
    """Text stripped of surrounding blanks; its length is bounded by the request's type."""
    value = value.strip()
    if not value:
        raise Invalid(f"{what} must not be empty")
    if "\x00" in value:
        raise Invalid(f"{what} contains a NUL character")
    return value


def _is(path: Path, kind: str) -> bool:
    """Whether `path` is a folder ("dir") or a file: False for a name the OS refuses (a NUL,
    a name too long), which Path.is_dir() would raise for."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except (OSError, ValueError):
        return False


def check_git_dir(path: str) -> str:
    """An absolute, existing git work tree with at least one commit; returns its real path.

    A work tree with uncommitted changes is fine: worktrees branch from its HEAD commit, and
    the user's own changes stay where they are. A bare repository has no work tree."""
    p = Path(path)
    shown = q.shown(path, 200)
    if not p.is_absolute():
        raise Invalid(f"list dir {shown} must be an absolute path")
    if not _is(p, "dir"):
        raise Invalid(f"list dir {shown} does not exist or is not a folder")

    inside = run_git(p, "rev-parse", "--is-inside-work-tree", timeout_s=30)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        raise Invalid(f"list dir {shown} is not a git work tree")
    if not git_ok(p, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", timeout_s=30):
        raise Invalid(f"list dir {shown} has no commit yet (commit something first)")
    return str(p.resolve())


def _check_settings(s: rq.AgentSettings | rq.AgentSettingsChange) -> dict[str, Any]:
    """The settings given, validated, as event fields (UNSET ones left out)."""
    out: dict[str, Any] = {}
    for name in ev.AGENT_SETTINGS:
        value = getattr(s, name)
        if value is UNSET:
            continue
        if value is not None:
            value = _check_setting(name, value)
        out[name] = value
    return out


def _check_setting(name: str, value: Any) -> Any:
    """A setting's value as its event field. Numbers need nothing here: the request's types
    are the catalog's ranges (api/verbs.py), checked when the request was decoded."""
    if name == "model":
        return _text(value, "model")
    if name == "system_prompt":
        return _text(value, "system prompt")
    if name == "agent_path":
        path = Path(value)
        if not path.is_absolute() or not _is(path, "file"):
            raise Invalid(
                f"agent file {q.shown(value, 200)} does not exist (give an absolute path to a file)"
            )
        return str(path)
    if name == "permission_mode":
        if value not in PERMISSION_MODES:
            raise Invalid(
                f"unknown permission mode {value!r} (one of: {', '.join(PERMISSION_MODES)})"
            )
        try:
            check_permission_mode(value, os.environ, os.geteuid())
        except ClaudeDoError as exc:
            raise Invalid(str(exc)) from None
        return value
    if name == "allowed_tools":
        return tuple(_text(t, "allowed tool") for t in value)
    if name in ("max_budget_usd", "timeout_s"):
        return float(value)
    if name == "max_turns":
        return value
    raise AssertionError(name)


def prepare(req: rq.Request) -> rq.Request:
    """Checks that touch the file system; run before the projector decides."""
    if isinstance(req, rq.CreateList | rq.ConfigureList):
        if isinstance(req.dir, str):
            req = msgspec.structs.replace(req, dir=check_git_dir(req.dir))
        _check_settings(req)
    elif isinstance(req, rq.AddTask | rq.EditTask):
        _check_settings(req)
    return req


# --- deciding (runs in the projector, against the folded state) --------------------------


class Decider:
    """Turns one request into a Plan, given the projection and the origin of the command."""

    def __init__(self, p: Projection, origin: ev.Origin) -> None:
        self.p = p
        self.origin = origin

    def envelop(self, event: ev.Event, aggregate_id: str) -> ev.Envelope:
        return ev.envelop(event, aggregate_id, self.origin)

    def create_list(self, req: rq.CreateList) -> Plan:
        name = _text(req.name, "list name")
        self._name_free(name)
        list_id = ev.new_aggregate_id()
        event = ev.ListCreated(name=name, dir=req.dir, **_check_settings(req))
        return Plan(
            [self._list_append(self.envelop(event, list_id))],
            lambda p: q.list_row(p, list_id),
        )

    def configure_list(self, req: rq.ConfigureList) -> Plan:
        state = _open_list(q.resolve_list(self.p, req.list_ref))
        changes = _check_settings(req)
        if req.name is not UNSET:
            name = _text(req.name, "list name")
            if name != state.name:
                self._name_free(name)
            changes["name"] = name
        if req.dir is not UNSET:
            changes["dir"] = req.dir
        if not changes:
            raise Invalid("nothing to change: give at least one setting")
        event = ev.ListConfigured(**changes)
        return Plan(
            [self._list_append(self.envelop(event, state.id))],
            lambda p: q.list_row(p, state.id),
        )

    def archive_list(self, req: rq.ListOf) -> Plan:
        state = _open_list(q.resolve_list(self.p, req.list_ref))
        return self._list_plan(state, ev.ListArchived())

    def unarchive_list(self, req: rq.ListOf) -> Plan:
        state = q.resolve_list(self.p, req.list_ref)
        if state.deleted_at is not None:
            raise Conflict(f"list {q.shown(state.name)} is deleted")
        if state.archived_at is None:
            raise Conflict(f"list {q.shown(state.name)} is not archived")
        return self._list_plan(state, ev.ListUnarchived())

    def delete_list(self, req: rq.DeleteList) -> Plan:
        state = q.resolve_list(self.p, req.list_ref)
        if state.deleted_at is not None:
            raise Conflict(f"list {q.shown(state.name)} is already deleted")
        busy, unmerged = q.list_holds(self.p, state.id)
        held = [
            *([f"{busy} task(s) queued or running"] if busy else []),
            *([f"{unmerged} task(s) with unmerged commits"] if unmerged else []),
        ]
        if held and not req.force:
            raise Conflict(
                f"cannot delete list {q.shown(state.name)}: {', '.join(held)} (let them end, "
                "merge or discard their work, or delete with --force)"
            )
        return self._list_plan(state, ev.ListDeleted(forced=bool(held), overrode=_said(held)))

    def _list_plan(self, state: ListState, event: ev.Event) -> Plan:
        return Plan(
            [self._list_append(self.envelop(event, state.id))],
            lambda p: q.list_row(p, state.id),
        )

    def _name_free(self, name: str) -> None:
        row = self.p.con.execute(
            "SELECT id FROM lists WHERE name = ? AND deleted_at IS NULL", [name]
        ).fetchone()
        if row is not None:
            raise Conflict(f"a list named {name!r} already exists ({row[0][:8]})")

    def _list_append(self, env: ev.Envelope) -> Append:
        # List names are unique across lists, so every list command is checked against the
        # last event of any list, not just its own.
        return Append([env], q.lists_last_seq(self.p), ev.collection_filter("list"))

    def add_task(self, req: rq.AddTask) -> Plan:
        lst = _open_list(q.resolve_list(self.p, req.list_ref))
        title = _text(req.title, "task title")
        description = req.description.strip()
        subtasks = tuple(
            ev.Subtask(subtask_id=ev.new_aggregate_id(), title=_text(t, "sub-task title"))
            for t in req.subtasks
        )
        task_id = ev.new_aggregate_id()
        created = ev.TaskCreated(
            list_id=lst.id,
            title=title,
            description=description,
            subtasks=subtasks,
            **_check_settings(req),
        )
        envs = [self.envelop(created, task_id)]
        if req.queue:
            envs.append(self.envelop(ev.TaskQueued(), task_id))
        return Plan([Append(envs, 0)], lambda p: q.task_detail(p, task_id))

    def edit_task(self, req: rq.EditTask) -> Plan:
        task = q.resolve_task(self.p, req.task)
        changes = _check_settings(req)
        if req.title is not UNSET:
            changes["title"] = _text(req.title, "task title")
        if req.description is not UNSET:
            changes["description"] = req.description.strip()
        if not changes:
            raise Invalid("nothing to change: give at least one field")
        return self._task_plan([(task, [ev.TaskEdited(**changes)])])

    def queue(self, req: rq.TaskIds) -> Plan:
        return self._each(req.tasks, lambda t: [ev.TaskQueued()])

    def continue_task(self, req: rq.ContinueTask) -> Plan:
        task = q.resolve_task(self.p, req.task)
        prompt = _text(req.prompt, "follow-up prompt")
        last = task.runs[-1] if task.runs else None
        if last is None:
            raise Conflict("No previous run to continue.")
        if not last.session_id:
            raise Conflict("Previous run has no session ID — cannot resume.")
        return self._task_plan([(task, [ev.TaskQueued(follow_up_prompt=prompt)])])

    def unqueue(self, req: rq.TaskIds) -> Plan:
        return self._each(req.tasks, lambda t: [ev.TaskUnqueued()])

    def cancel(self, req: rq.TaskIds) -> Plan:
        def events_for(task: TaskState) -> list[ev.Event]:
            # A claimed or running task is stopped by its slot, which then settles it.
            if task.status in ("claimed", "running"):
                return [ev.TaskCancelRequested()]
            return [ev.TaskCancelled()]

        return self._each(req.tasks, events_for)

    def archive(self, req: rq.TaskIds) -> Plan:
        return self._each(req.tasks, lambda t: [ev.TaskArchived()])

    def unarchive(self, req: rq.TaskIds) -> Plan:
        return self._each(req.tasks, lambda t: [ev.TaskUnarchived()])

    def delete(self, req: rq.DeleteTasks) -> Plan:
        def events_for(task: TaskState) -> list[ev.Event]:
            held = _holds(task)
            if held and not req.force:
                raise Conflict(
                    f"cannot delete task {task.id[:8]}: {', '.join(held)} (let it end, merge "
                    "or discard its work, or delete with --force)"
                )
            out: list[ev.Event] = []
            if task.status == "queued":
                out.append(ev.TaskUnqueued())  # so no slot claims it afterwards
            if task.status in ("claimed", "running") and not task.cancel_requested:
                out.append(ev.TaskCancelRequested(reason="deleted by user"))
            return [*out, ev.TaskDeleted(forced=bool(held), overrode=_said(held))]

        return self._each(req.tasks, events_for)

    def add_subtasks(self, req: rq.AddSubtasks) -> Plan:
        task = q.resolve_task(self.p, req.task)
        if not req.titles:
            raise Invalid("give at least one sub-task title")
        added: list[ev.Event] = [
            ev.SubtaskAdded(subtask_id=ev.new_aggregate_id(), title=_text(t, "sub-task title"))
            for t in req.titles
        ]
        return self._task_plan([(task, added)])

    def mark_subtasks(self, req: rq.MarkSubtasks, done: bool) -> Plan:
        task = q.resolve_task(self.p, req.task)
        if not req.subtasks:
            raise Invalid("give at least one sub-task (its number or id prefix)")
        marks: list[ev.Event] = []
        for ref in req.subtasks:
            sub_id = _resolve_subtask(task, ref)
            marks.append(
                ev.SubtaskCompleted(subtask_id=sub_id)
                if done
                else ev.SubtaskReopened(subtask_id=sub_id)
            )
        return self._task_plan([(task, marks)])

    def _each(self, refs: Sequence[str], events_for: Callable[[TaskState], list[ev.Event]]) -> Plan:
        if not refs:
            raise Invalid("give at least one task id")
        tasks: dict[str, TaskState] = {}
        for ref in refs:
            task = q.resolve_task(self.p, ref)
            tasks[task.id] = task
        return self._task_plan([(t, events_for(t)) for t in tasks.values()])

    def _task_plan(self, work: list[tuple[TaskState, list[ev.Event]]]) -> Plan:
        appends = []
        for task, evs in work:
            for event in evs:
                why = refusal(task, event)
                if why is not None:
                    raise Conflict(f"cannot {_verb(event)}: {why}")
            envs = [self.envelop(e, task.id) for e in evs]
            appends.append(Append(envs, q.task_last_seq(self.p, task)))
        ids = [t.id for t, _ in work]
        if len(ids) == 1:
            return Plan(appends, lambda p: q.task_detail(p, ids[0]))
        return Plan(appends, lambda p: [q.task_detail(p, i) for i in ids])


def _open_list(state: ListState) -> ListState:
    """The list, if it takes commands: not deleted, and not archived."""
    if state.deleted_at is not None:
        raise Conflict(f"list {q.shown(state.name)} is deleted")
    if state.archived_at is not None:
        raise Conflict(f"list {q.shown(state.name)} is archived (list unarchive brings it back)")
    return state


def _holds(task: TaskState) -> list[str]:
    """What deleting the task would hide: a run under way, commits not merged."""
    held = []
    if task.status in ("claimed", "running"):
        held.append(f"it is {task.status}")
    tree = task.worktree
    active = tree is not None and tree.kind == "worktree" and tree.status == "active"
    if tree is not None and active and tree.commit_count:
        held.append(f"its branch {tree.branch} has {tree.commit_count} unmerged commit(s)")
    return held


def _said(held: list[str]) -> str | None:
    return "; ".join(held) or None


def _resolve_subtask(task: TaskState, ref: str) -> str:
    ref = ref.strip()
    # ASCII digits only: str.isdigit() holds for '²' and other digits int() refuses.
    if ref.isascii() and ref.isdigit():
        n = int(ref) if len(ref) <= 9 else 0
        if not 1 <= n <= len(task.subtasks):
            raise NotFound(f"task {task.id[:8]} has no sub-task number {q.shown(ref)}")
        return task.subtasks[n - 1].subtask_id
    matches = [s for s in task.subtasks if s.subtask_id.startswith(ref.lower())] if ref else []
    if not matches:
        raise NotFound(f"task {task.id[:8]} has no sub-task {q.shown(ref)}")
    if len(matches) > 1:
        raise Invalid(f"sub-task prefix {q.shown(ref)} is ambiguous")
    return matches[0].subtask_id


_VERBS = {
    ev.TaskEdited: "edit",
    ev.SubtaskAdded: "add sub-tasks",
    ev.SubtaskCompleted: "tick sub-tasks",
    ev.SubtaskReopened: "untick sub-tasks",
    ev.TaskQueued: "queue",  # also continue: a queued follow-up
    ev.TaskUnqueued: "unqueue",
    ev.TaskCancelled: "cancel",
    ev.TaskCancelRequested: "cancel",
    ev.TaskArchived: "archive",
    ev.TaskUnarchived: "unarchive",
    ev.TaskDeleted: "delete",
}


def _verb(event: ev.Event) -> str:
    return _VERBS.get(type(event), type(event).__name__)
