"""Folders that cannot do their job: a list's dir, a node's log folder. Each is a clear error
at the request, or a run that ends in a terminal event saying why; never a hang."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_support import Api, assert_refused, make_repo
from tests.conftest import NodeProcess
from tests.runner_support import Runner, git_out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    node = NodeProcess(tmp_path_factory.mktemp("folders") / "home").start()
    client = Api(node)
    client.ok("list.add", {"name": "sandbox"})
    yield client
    node.stop()


def _bare(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


# name -> (make the dir under a temp folder, what the error says)
BAD_DIRS = {
    "missing": (lambda root: root / "missing", "does not exist or is not a folder"),
    "a file": (lambda root: _file(root / "a-file"), "does not exist or is not a folder"),
    "not git": (lambda root: _folder(root / "plain"), "is not a git work tree"),
    "bare": (lambda root: _bare(root / "bare.git"), "is not a git work tree"),
    "no commits": (lambda root: make_repo(root / "empty", commit=False), "has no commit yet"),
    "a .git folder": (lambda root: make_repo(root / "r") / ".git", "is not a git work tree"),
    "relative": (lambda root: Path("relative/repo"), "must be an absolute path"),
    "name too long": (lambda root: root / ("x" * 300), "does not exist or is not a folder"),
    "NUL in it": (lambda root: Path(f"{root}/a\x00b"), "does not exist or is not a folder"),
}


def _file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("kind", BAD_DIRS)
def test_a_list_dir_that_cannot_hold_worktrees_is_refused_and_nothing_is_appended(
    api: Api, tmp_path: Path, kind: str
) -> None:
    make, says = BAD_DIRS[kind]
    path = str(make(tmp_path))
    message = assert_refused(api, "list.add", {"name": f"l-{kind}", "dir": path})
    assert says in message and "\x00" not in message, message
    message = assert_refused(api, "list.config", {"list": "sandbox", "dir": path})
    assert says in message, message
    assert api.ok("list.ls")[0]["dir"] is None


def test_a_dirty_work_tree_is_a_list_dir_and_its_changes_stay_out_of_worktrees(
    tmp_path: Path,
) -> None:
    """Decided: uncommitted changes are fine. Worktrees branch from the HEAD commit, so a run
    sees what is committed, and the user's own changes stay where they are, untouched."""
    repo = make_repo(tmp_path / "repo")
    (repo / "README.md").write_text("changed, not committed\n")
    (repo / "untracked.txt").write_text("new\n")
    runner = Runner(tmp_path).start()
    try:
        runner.add_list(repo)
        task = runner.wait_status(runner.add_task("works on HEAD"))
        assert task["status"] == "done", task
        tree = Path(task["worktree"]["path"])
        assert (tree / "README.md").read_text() == "hello\n"
        assert not (tree / "untracked.txt").exists()
    finally:
        runner.stop()
    assert (repo / "README.md").read_text() == "changed, not committed\n"
    status = git_out(repo, "status", "--short").splitlines()
    assert [line.strip() for line in status] == ["M README.md", "?? untracked.txt"]


@pytest.mark.parametrize("what", ["moved away", "no longer git"])
def test_a_list_dir_broken_after_the_list_was_made_fails_its_tasks_clearly(
    tmp_path: Path, what: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    runner = Runner(tmp_path).start()
    try:
        runner.add_list(repo)
        if what == "moved away":
            shutil.move(repo, tmp_path / "elsewhere")
        else:
            shutil.rmtree(repo / ".git")
        task = runner.wait_status(runner.add_task("has nowhere to run"))
    finally:
        runner.stop()
    assert (task["status"], task["cause"]) == ("failed", "worktree_failed")
    assert task["error"].startswith("Worktree creation failed: ") and "\n" not in task["error"]


def test_a_log_folder_that_cannot_be_made_fails_the_run_with_its_error(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1).start()
    try:
        runner.add_list(None)
        logs = runner.node.home / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.write_text("a file where the logs folder should be\n")
        task = runner.wait_status(runner.add_task("cannot log"))
    finally:
        runner.stop()
    assert task["status"] == "failed" and str(logs) in task["error"], task
    assert "Internal error" not in task["error"] and task["cause"] == "log_failed"
    assert [r["finished_at"] is not None for r in task["runs"]] == [True]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only folder")
def test_a_read_only_log_folder_fails_the_run_with_its_error(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1).start()
    logs = runner.node.home / "logs"
    try:
        runner.add_list(None)
        logs.mkdir(exist_ok=True)
        logs.chmod(0o555)
        task = runner.wait_status(runner.add_task("cannot log"))
    finally:
        logs.chmod(0o755)
        runner.stop()
    assert task["status"] == "failed" and "Permission denied" in task["error"], task


def test_a_full_log_disk_ends_the_run_with_a_terminal_event(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1).start()
    try:
        runner.add_list(None)
        task_id = runner.add_task("log disk full", queue=False)
        logs = runner.node.home / "logs"
        logs.mkdir(exist_ok=True)
        # Every write to the run's log fails as on a full disk (ENOSPC).
        (logs / f"{task_id}_run1.ndjson").symlink_to("/dev/full")
        runner.ask("task.queue", tasks=[task_id])
        task = runner.wait_status(task_id, timeout_s=20)
    finally:
        runner.stop()
    assert task["status"] == "failed" and "No space left" in (task["error"] or ""), task
    assert task["cause"] == "log_failed" and task["runs"][0]["finished_at"] is not None
