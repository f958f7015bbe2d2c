"""Putting work away without losing it: tasks and lists archived or deleted (events, never a
lost record), and `worktree prune`, which removes only what is merged or empty."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.errors import ClaudeDoError
from tests.conftest import _git
from tests.runner_support import Runner, git_out


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(tmp_path_factory.mktemp("archive"), slots=2).start()
    yield r
    r.stop()


@pytest.fixture
def demo(runner: Runner, git_repo: Path) -> str:
    name = f"arch-{uuid.uuid4().hex[:8]}"
    runner.add_list(git_repo, name)
    return name


def claudedo(runner: Runner, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claudedo_actors", *args],
        env=runner.node.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def shown(runner: Runner, list_name: str, archived: bool = False) -> list[str]:
    return [t["id"] for t in runner.ask("tasks", list=list_name, archived=archived)]


def done_task(runner: Runner, list_name: str, title: str = "Write [fake:write]") -> str:
    task_id = runner.add_task(title, list_name)
    assert runner.wait_status(task_id)["status"] == "done"
    return task_id


def test_an_archived_task_is_hidden_until_asked_for_and_comes_back(
    runner: Runner, demo: str
) -> None:
    task_id = runner.add_task("Old", demo, queue=False)
    runner.ask("task.archive", tasks=[task_id])
    assert shown(runner, demo) == [] and shown(runner, demo, archived=True) == [task_id]
    with pytest.raises(ClaudeDoError, match="is archived"):
        runner.ask("task.queue", tasks=[task_id])
    with pytest.raises(ClaudeDoError, match="already archived"):
        runner.ask("task.archive", tasks=[task_id])
    runner.ask("task.unarchive", tasks=[task_id])
    assert shown(runner, demo) == [task_id]
    assert runner.events(task_id) == ["TaskCreated", "TaskArchived", "TaskUnarchived"]


def test_a_task_under_way_is_not_archived(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Slow [fake:slow]", demo)
    runner.wait_run(task_id)
    with pytest.raises(ClaudeDoError, match="is running"):
        runner.ask("task.archive", tasks=[task_id])
    runner.ask("task.cancel", tasks=[task_id])
    runner.wait_status(task_id)


def test_a_deleted_task_keeps_its_record_and_takes_no_more_commands(
    runner: Runner, demo: str
) -> None:
    task_id = runner.add_task("Gone", demo, queue=False)
    cli = claudedo(runner, "task", "delete", task_id)
    assert cli.returncode == 0 and cli.stdout.startswith(f'deleted {task_id[:8]} "Gone"')
    assert shown(runner, demo) == [] and shown(runner, demo, archived=True) == [task_id]
    assert runner.task(task_id)["deleted_at"] is not None
    for verb, payload in (("task.queue", {"tasks": [task_id]}),
                          ("task.edit", {"task": task_id, "title": "x"}),
                          ("task.unarchive", {"tasks": [task_id]})):  # fmt: skip
        with pytest.raises(ClaudeDoError, match="is deleted"):
            runner.ask(verb, **payload)
    assert runner.events(task_id) == ["TaskCreated", "TaskDeleted"]
    (deleted,) = [e for e in runner.ask("audit", task=task_id) if e["type"] == "TaskDeleted"]
    assert deleted["payload"] == {"forced": False, "overrode": None}


def test_deleting_a_queued_task_unqueues_it_first(runner: Runner) -> None:
    name = f"noslot-{uuid.uuid4().hex[:8]}"
    runner.add_list(None, name)
    draft = runner.add_task("Waiting", name, queue=False)
    runner.ask("task.delete", tasks=[draft])
    assert runner.task(draft)["status"] == "draft"


def test_deleting_refuses_a_running_task_or_unmerged_work_unless_forced(
    runner: Runner, demo: str
) -> None:
    running = runner.add_task("Slow [fake:slow]", demo)
    runner.wait_run(running)
    refused = claudedo(runner, "task", "delete", running)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "cannot delete task" in refused.stderr and "is running" in refused.stderr
    assert "TaskDeleted" not in runner.events(running)
    runner.ask("task.delete", tasks=[running], force=True)
    assert runner.wait_status(running)["status"] == "cancelled"
    (deleted,) = [e for e in runner.ask("audit", task=running) if e["type"] == "TaskDeleted"]
    assert deleted["payload"] == {"forced": True, "overrode": "it is running"}
    assert shown(runner, demo) == []

    work = done_task(runner, demo)
    with pytest.raises(ClaudeDoError, match="1 unmerged commit"):
        runner.ask("task.delete", tasks=[work])
    runner.ask("task.delete", tasks=[work], force=True)
    tree = runner.task(work)["worktree"]
    assert tree["status"] == "active" and Path(tree["path"]).is_dir()  # the work stays


def test_an_archived_list_hides_its_tasks_and_a_deleted_list_frees_its_name(
    runner: Runner, git_repo: Path
) -> None:
    name = f"lst-{uuid.uuid4().hex[:8]}"
    list_id = runner.add_list(git_repo, name)
    task_id = runner.add_task("In the list", name, queue=False)
    runner.ask("list.archive", list=name)
    assert name not in [row["name"] for row in runner.ask("list.ls")]
    assert name in [row["name"] for row in runner.ask("list.ls", archived=True)]
    assert task_id not in [t["id"] for t in runner.ask("tasks")]
    assert task_id in [t["id"] for t in runner.ask("tasks", archived=True)]
    with pytest.raises(ClaudeDoError, match="is archived"):
        runner.add_task("More", name, queue=False)
    runner.ask("list.unarchive", list=name)
    assert task_id in [t["id"] for t in runner.ask("tasks")]
    deleted = claudedo(runner, "list", "delete", name)
    assert deleted.returncode == 0 and deleted.stdout.startswith(f"deleted list {name}")
    with pytest.raises(ClaudeDoError, match="is deleted"):
        runner.ask("list.config", list=list_id, model="m")
    again = runner.add_list(git_repo, name)  # the name is free again
    assert again != list_id and runner.ask("task.add", list=name, title="new")["list_id"] == again
    types = [
        r[0]
        for r in runner.ask(
            "sql", query=f"select type from events where aggregate_id = '{list_id}' order by seq"
        )["rows"]
    ]
    assert types == ["ListCreated", "ListArchived", "ListUnarchived", "ListDeleted"]


def test_deleting_a_list_with_unmerged_work_needs_force(runner: Runner, git_repo: Path) -> None:
    name = f"busy-{uuid.uuid4().hex[:8]}"
    list_id = runner.add_list(git_repo, name)
    done_task(runner, name)
    with pytest.raises(ClaudeDoError, match="1 task\\(s\\) with unmerged commits"):
        runner.ask("list.delete", list=name)
    runner.ask("list.delete", list=name, force=True)
    payload = runner.ask(
        "sql",
        query=f"select payload from events where aggregate_id = '{list_id}' "
        "and type = 'ListDeleted'",
    )["rows"][0][0]
    assert '"forced":true' in payload.replace(" ", "")


# --- worktree prune --------------------------------------------------------------------------


def test_prune_lists_then_removes_only_merged_or_empty_worktrees(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    merged = done_task(runner, demo)
    unmerged = done_task(runner, demo)  # made before the merge, so its commit is its own
    runner.ask("worktree.merge", task=merged)
    empty = done_task(runner, demo, "Say hello")
    dirty = runner.add_task("Half [fake:write_then_fail]", demo)
    runner.wait_status(dirty)
    paths = {t: runner.task(t)["worktree"]["path"] for t in (merged, empty, unmerged, dirty)}

    dry = claudedo(runner, "worktree", "prune")
    assert dry.returncode == 0
    assert f"would remove claudedo/{merged.replace('-', '')} of task {merged[:8]} (merged)" in (
        dry.stdout
    )
    assert f"of task {empty[:8]} (empty)" in dry.stdout
    assert unmerged[:8] not in dry.stdout and dirty[:8] not in dry.stdout
    assert dry.stdout.rstrip().endswith("run again with --yes to remove them")
    assert all(Path(p).is_dir() for p in paths.values())

    done = claudedo(runner, "worktree", "prune", "--yes")
    assert done.returncode == 0 and f"removed claudedo/{merged.replace('-', '')}" in done.stdout
    assert not Path(paths[merged]).exists() and not Path(paths[empty]).exists()
    assert Path(paths[unmerged]).is_dir() and Path(paths[dirty]).is_dir()
    branches = git_out(git_repo, "branch", "--list", "claudedo/*")
    assert unmerged.replace("-", "") in branches and merged.replace("-", "") not in branches
    for task_id in (merged, empty):
        (event,) = [e for e in runner.ask("audit", task=task_id)
                    if e["type"] == "WorktreeDiscarded"]  # fmt: skip
        assert event["actor"].startswith("user:")
    after = claudedo(runner, "worktree", "prune").stdout
    assert merged[:8] not in after and empty[:8] not in after


def test_prune_keeps_a_merged_branch_that_got_new_commits(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    runner.ask("worktree.merge", task=task_id)
    tree = runner.task(task_id)["worktree"]
    (Path(tree["path"]) / "later.txt").write_text("after the merge\n")
    _git(Path(tree["path"]), "add", "later.txt")
    _git(Path(tree["path"]), "commit", "-q", "-m", "later")
    listed = runner.ask("worktree.prune")["worktrees"]
    assert task_id not in [row["task_id"] for row in listed]
