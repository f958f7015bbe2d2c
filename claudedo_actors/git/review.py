"""Reviewing a task's work: diff, merge into the base branch, discard (keeping the commits).

Git runs outside the event loop and the projector. The event (WorktreeMerged or
WorktreeDiscarded, with the actor who decided) is appended once git did it: it records a fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import events as ev
from claudedo_actors.git import worktrees as wt
from events.errors import Conflict, Invalid
from projections import Projection, TaskState, WorktreeState
from projections import queries as q

T = TypeVar("T")
_BUSY = ("queued", "claimed", "running")


def _tree_of(task: TaskState, action: str) -> WorktreeState:
    tree = task.worktree
    if tree is None:
        raise Invalid(f"task {task.id[:8]} has no worktree yet (it never ran)")
    if tree.kind != "worktree" or tree.branch is None or tree.base_commit is None:
        raise Invalid(f"task {task.id[:8]} ran in a sandbox folder, not a git worktree")
    if tree.status == "discarded" and action != "diff":
        raise Conflict(f"the worktree of task {task.id[:8]} was discarded")
    if task.status in _BUSY and action != "diff":
        raise Conflict(f"task {task.id[:8]} is {task.status}; cancel it or wait until it ends")
    return tree


def check(task: TaskState, action: str) -> None:
    """Raise the error that refuses `action` ("merge", "discard") on `task` now, if any."""
    _tree_of(task, action)
    if task.review is not None:
        raise Conflict(f"task {task.id[:8]} is already being {task.review}d; wait until it ends")


def _repo_of(p: Projection, task: TaskState) -> str:
    """The repository of the task's worktree, as recorded when it was made; for worktrees
    recorded before that, the list's dir."""
    if task.worktree is not None and task.worktree.repo:
        return task.worktree.repo
    lst = p.list_state(task.list_id)
    if lst is None or not lst.dir:
        raise Invalid(f"the list of task {task.id[:8]} has no git dir")
    return lst.dir


def diff(task: TaskState, repo: str, stat: bool) -> dict[str, Any]:
    tree = _tree_of(task, "diff")
    assert tree.base_commit is not None
    if tree.status == "discarded":
        head = tree.kept_ref or tree.head_commit or tree.base_commit
        pending: list[str] = []
    else:
        head = f"refs/heads/{tree.branch}"
        pending = wt.uncommitted(tree.path) if Path(tree.path).is_dir() else []
    return {
        "task_id": task.id,
        "branch": tree.branch,
        "base_branch": tree.base_branch,
        "base_commit": tree.base_commit,
        "diff": wt.diff_text(repo, tree.base_commit, head, stat=stat),
        "uncommitted": pending,
    }


# What a merge did, for the one line the CLI says: `merged`, or nothing to do.
MERGE_OUTCOMES = {"empty": "nothing_to_merge", "merged": "already_merged"}


def merge(task: TaskState, repo: str) -> tuple[ev.WorktreeMerged, str]:
    """The merge's event, and its outcome: `merged`, `already_merged` (the base holds the
    branch already) or `nothing_to_merge` (the branch has no commit of its own)."""
    tree = _tree_of(task, "merge")
    assert tree.branch is not None and tree.base_commit is not None
    if tree.base_branch is None:
        raise Invalid(f"task {task.id[:8]} was made from a detached HEAD: no branch to merge into")
    if Path(tree.path).is_dir() and wt.uncommitted(tree.path):
        raise Conflict(
            f"the worktree of task {task.id[:8]} has uncommitted changes (a failed run's work?): "
            "continue the task or discard it; nothing was merged"
        )
    message = f"Merge ClaudeDo task: {task.title}\n\nClaudeDo task {task.id}"
    state = wt.merge_state(repo, tree.branch, tree.base_branch, tree.base_commit)
    commit = wt.merge_into_base(repo, tree.branch, tree.base_branch, tree.base_commit, message)
    event = ev.WorktreeMerged(into_branch=tree.base_branch, merge_commit=commit)
    return event, MERGE_OUTCOMES.get(state, "merged")


def discard(task: TaskState, repo: str) -> ev.WorktreeDiscarded:
    tree = _tree_of(task, "discard")
    assert tree.branch is not None
    message = f"Uncommitted work of ClaudeDo task {task.id}, kept at discard"
    kept, head = wt.discard_worktree(repo, tree.path, tree.branch, task.id, message)
    return ev.WorktreeDiscarded(kept_ref=kept, head_commit=head)


def prunable(task: TaskState, repo: str) -> str | None:
    """Why `worktree prune` may remove the task's worktree and branch (`merged`, `empty`),
    or None: it holds a commit its base lacks, uncommitted changes, or a task under way."""
    tree = task.worktree
    if tree is None or tree.kind != "worktree" or tree.status == "discarded":
        return None
    if tree.branch is None or tree.base_commit is None:
        return None
    if task.status in _BUSY or task.review is not None:
        return None
    if Path(tree.path).is_dir() and wt.uncommitted(tree.path):
        return None
    state = wt.merge_state(repo, tree.branch, tree.base_branch, tree.base_commit)
    return state if state in ("merged", "empty") else None


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def task_and_repo(p: Projection, ref: str) -> tuple[TaskState, str]:
    task = q.resolve_task(p, ref)
    return task, _repo_of(p, task)
