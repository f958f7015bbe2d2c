"""Reviewing work without losing it: diff, merge into the base branch, discard; log and board."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

import events as ev
from claudedo_actors.node.home import Home, NodeAddress
from events.log import EventLog
from tests.conftest import _git, home_url, wait_until
from tests.runner_support import Runner, git_out


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(tmp_path_factory.mktemp("review"), slots=3).start()
    yield r
    r.stop()


@pytest.fixture
def demo(runner: Runner, git_repo: Path) -> str:
    name = f"review-{uuid.uuid4().hex[:8]}"
    runner.add_list(git_repo, name)
    return name


def done_task(runner: Runner, list_name: str, title: str = "Write [fake:write]") -> str:
    task_id = runner.add_task(title, list_name)
    assert runner.wait_status(task_id)["status"] == "done"
    return task_id


def claudedo(runner: Runner, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claudedo_actors", *args],
        env=runner.node.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def audit_of(runner: Runner, task_id: str, event_type: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in runner.ask("audit", task=task_id) if e["type"] == event_type]


# --- diff --------------------------------------------------------------------------------------


def test_diff_shows_what_the_branch_changed(runner: Runner, demo: str) -> None:
    task_id = done_task(runner, demo)
    result = runner.ask("worktree.diff", task=task_id)
    assert "+++ b/fake.txt" in result["diff"] and "+written by the fake agent" in result["diff"]
    assert result["uncommitted"] == [] and result["base_branch"] == "main"
    cli = claudedo(runner, "worktree", "diff", task_id[:8], "--stat")
    assert cli.returncode == 0 and "fake.txt" in cli.stdout


# --- merge -------------------------------------------------------------------------------------


def test_merge_into_the_checked_out_base_updates_the_users_tree(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    merged = runner.ask("worktree.merge", task=task_id, actor="alice")
    assert merged["worktree"]["status"] == "merged"
    assert (git_repo / "fake.txt").read_text() == "written by the fake agent\n"
    assert git_out(git_repo, "status", "--porcelain") == ""
    assert git_out(git_repo, "rev-parse", "main") == merged["worktree"]["merge_commit"]
    (event,) = audit_of(runner, task_id, "WorktreeMerged")
    assert event["actor"] == "alice" and event["payload"]["into_branch"] == "main"


def test_merge_after_the_base_moved_makes_a_merge_commit(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    (git_repo / "theirs.txt").write_text("the user's own work\n")
    _git(git_repo, "add", "theirs.txt")
    _git(git_repo, "commit", "-q", "-m", "user work")
    merged = runner.ask("worktree.merge", task=task_id)
    parents = git_out(git_repo, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == 2 and merged["worktree"]["merge_commit"] == git_out(
        git_repo, "rev-parse", "main"
    )
    assert (git_repo / "fake.txt").exists() and (git_repo / "theirs.txt").exists()


def test_a_merge_conflict_is_an_error_that_changes_nothing(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    (git_repo / "fake.txt").write_text("the user wrote this first\n")
    _git(git_repo, "add", "fake.txt")
    _git(git_repo, "commit", "-q", "-m", "user version")
    before = git_out(git_repo, "rev-parse", "main")
    cli = claudedo(runner, "worktree", "merge", task_id)
    assert cli.returncode == 1 and cli.stderr.startswith("error: merging into main conflicts")
    assert len(cli.stderr.strip().splitlines()) == 1
    assert git_out(git_repo, "rev-parse", "main") == before
    assert git_out(git_repo, "status", "--porcelain") == ""
    assert runner.task(task_id)["worktree"]["status"] == "active"
    assert audit_of(runner, task_id, "WorktreeMerged") == []


def test_merge_never_overwrites_the_users_uncommitted_files(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    (git_repo / "fake.txt").write_text("my unsaved work\n")  # untracked, where the merge writes
    before = git_out(git_repo, "rev-parse", "main")
    with pytest.raises(Exception, match="uncommitted changes"):
        runner.ask("worktree.merge", task=task_id)
    assert (git_repo / "fake.txt").read_text() == "my unsaved work\n"
    assert git_out(git_repo, "rev-parse", "main") == before


def test_merge_refuses_a_deleted_or_rewritten_base_branch(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    _git(git_repo, "commit", "-q", "--amend", "-m", "history rewritten")
    with pytest.raises(Exception, match="was rewritten"):
        runner.ask("worktree.merge", task=task_id)
    _git(git_repo, "checkout", "-q", "-b", "elsewhere")
    _git(git_repo, "branch", "-q", "-D", "main")
    with pytest.raises(Exception, match="no longer exists"):
        runner.ask("worktree.merge", task=task_id)
    assert runner.task(task_id)["worktree"]["status"] == "active"


def test_merge_into_a_base_not_checked_out_moves_only_its_ref(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    _git(git_repo, "checkout", "-q", "-b", "other")
    runner.ask("worktree.merge", task=task_id)
    assert not (git_repo / "fake.txt").exists()  # the user's tree (on other) is untouched
    assert git_out(git_repo, "show", "main:fake.txt") == "written by the fake agent"


def test_merge_and_discard_wait_for_a_running_task(runner: Runner, demo: str) -> None:
    task_id = done_task(runner, demo)
    runner.ask("task.continue", task=task_id, prompt="Slowly now [fake:slow]")
    runner.wait_run(task_id, run_number=2)
    for verb in ("worktree.merge", "worktree.discard"):
        with pytest.raises(Exception, match="is running"):
            runner.ask(verb, task=task_id)
    runner.ask("task.cancel", tasks=[task_id])
    runner.wait_status(task_id)


# --- discard -----------------------------------------------------------------------------------


def test_discard_removes_worktree_and_branch_but_keeps_the_commits(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    task = runner.task(task_id)
    head = task["worktree"]["head_commit"]
    discarded = runner.ask("worktree.discard", task=task_id, actor="bob")
    tree = discarded["worktree"]
    hex_id = task_id.replace("-", "")
    assert tree["status"] == "discarded" and tree["kept_ref"] == f"refs/claudedo/kept/{hex_id}/1"
    assert not Path(task["worktree"]["path"]).exists()
    assert git_out(git_repo, "branch", "--list", f"claudedo/{hex_id}") == ""
    assert git_out(git_repo, "rev-parse", tree["kept_ref"]) == head
    (event,) = audit_of(runner, task_id, "WorktreeDiscarded")
    assert event["actor"] == "bob" and event["payload"]["head_commit"] == head
    with pytest.raises(Exception, match="was discarded"):
        runner.ask("worktree.merge", task=task_id)
    assert "+written by" in runner.ask("worktree.diff", task=task_id)["diff"]


def test_discard_keeps_a_failed_runs_uncommitted_work(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = runner.add_task("Half [fake:write_then_fail]", demo)
    assert runner.wait_status(task_id)["status"] == "failed"
    assert runner.ask("worktree.diff", task=task_id)["uncommitted"] != []
    with pytest.raises(Exception, match="uncommitted changes"):
        runner.ask("worktree.merge", task=task_id)
    tree = runner.ask("worktree.discard", task=task_id)["worktree"]
    assert git_out(git_repo, "show", f"{tree['kept_ref']}:fake.txt") == (
        "half done by the fake agent"
    )


def test_review_of_a_sandbox_task_is_a_clear_error(runner: Runner) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    runner.add_list(None, name)
    task_id = done_task(runner, name, "No repo")
    cli = claudedo(runner, "worktree", "merge", task_id)
    assert cli.returncode == 1 and "list of task" in cli.stderr and "git dir" in cli.stderr


# --- log and board -----------------------------------------------------------------------------


def test_log_prints_a_finished_runs_transcript_from_its_file(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Flaky [fake:fail_then_succeed]", demo)
    runner.wait_status(task_id)
    runs = runner.ask("runs", task=task_id)
    latest = claudedo(runner, "log", task_id[:8])
    assert latest.returncode == 0
    assert latest.stdout.encode() == Path(runs[1]["log_path"]).read_bytes()
    first = claudedo(runner, "log", task_id, "--run", "1")
    assert first.stdout.encode() == Path(runs[0]["log_path"]).read_bytes()
    missing = claudedo(runner, "log", task_id, "--run", "9")
    assert missing.returncode == 1 and missing.stderr == f"error: task {task_id} has no run 9\n"


def test_log_follow_prints_live_lines_until_the_run_ends(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Slow [fake:slow]", demo)
    runner.wait_run(task_id)
    follow = subprocess.Popen(
        [sys.executable, "-m", "claudedo_actors", "log", task_id, "--follow"],
        env=runner.node.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert follow.stdout is not None
    first = json.loads(follow.stdout.readline())
    assert first["type"] == "system" and first["subtype"] == "init"
    runner.ask("task.cancel", tasks=[task_id])
    rest, _err = follow.communicate(timeout=60)
    assert follow.returncode == 0
    last = json.loads(rest.splitlines()[-1])
    assert last["type"] == "result"
    run = runner.ask("runs", task=task_id)[0]
    assert 1 + len(rest.splitlines()) == run["line_count"]


def test_watch_shows_running_tasks_with_what_they_said_last_and_cost(
    runner: Runner, demo: str
) -> None:
    task_id = runner.add_task("Slow [fake:slow]", demo)
    runner.wait_run(task_id)
    board = wait_until(
        lambda: (
            (b := runner.ask("board"))
            and any(r["id"] == task_id and r["last_line"] for r in b["working"])
            and b
        ),
        20,
        "the board to show the task",
    )
    row = next(r for r in board["working"] if r["id"] == task_id)
    assert row["status"] == "running" and row["run_number"] == 1 and row["slot"] is not None
    # What the run said last in words (its init line: the session), not the line's type.
    assert row["last_line"].startswith("· started: session ") and row["cost_usd"] == 0
    shown = claudedo(runner, "watch", "--once")
    assert shown.returncode == 0 and task_id[:8] in shown.stdout
    runner.ask("task.cancel", tasks=[task_id])
    runner.wait_status(task_id)


def test_log_of_a_task_without_runs_is_one_line_error(runner: Runner, demo: str) -> None:
    draft = runner.add_task("Draft", demo, queue=False)
    cli = claudedo(runner, "log", draft)
    assert cli.returncode == 1 and cli.stderr == f"error: task {draft} has no run yet\n"


# --- no work lost on the second try ------------------------------------------------------------


def _append(runner: Runner, task_id: str, event: ev.Event) -> None:
    """Append an event as another node would (a node's own credentials)."""
    address = NodeAddress.read(Home(runner.node.home))
    assert address is not None

    async def go() -> None:
        nc = await nats.connect(home_url(runner.node.home))
        try:
            origin = ev.Origin(node_id="ghost", correlation_id="c", actor="node:ghost")
            await EventLog(nc.jetstream()).append([ev.envelop(event, task_id, origin)], None)
        finally:
            await nc.close()

    asyncio.run(go())


def test_every_discard_keeps_its_own_ref_also_after_the_task_ran_again(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    first = runner.ask("worktree.discard", task=task_id)["worktree"]
    runner.ask("task.continue", task=task_id, prompt="Once more [fake:write]")
    assert runner.wait_status(task_id)["status"] == "done"
    second = runner.ask("worktree.discard", task=task_id)["worktree"]
    hex_id = task_id.replace("-", "")
    assert first["kept_ref"] == f"refs/claudedo/kept/{hex_id}/1"
    assert second["kept_ref"] == f"refs/claudedo/kept/{hex_id}/2"
    kept = [e["payload"] for e in audit_of(runner, task_id, "WorktreeDiscarded")]
    for payload in kept:  # every discarded head is still reachable, at its own ref
        assert git_out(git_repo, "rev-parse", payload["kept_ref"]) == payload["head_commit"]
    assert git_out(git_repo, "merge-base", "--is-ancestor", kept[0]["head_commit"],
                   kept[1]["head_commit"]) == ""  # fmt: skip


def test_continue_after_a_discard_starts_from_the_discarded_work(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    kept = runner.ask("worktree.discard", task=task_id)["worktree"]
    runner.ask("task.continue", task=task_id, prompt="Look again [fake:success]")
    task = runner.wait_status(task_id)
    assert task["status"] == "done"
    tree = task["worktree"]
    assert tree["status"] == "active" and Path(tree["path"]).is_dir()
    # The resumed session finds the files it wrote: the worktree was made from the kept ref.
    assert (Path(tree["path"]) / "fake.txt").read_text() == "written by the fake agent\n"
    assert git_out(git_repo, "merge-base", "--is-ancestor", git_out(git_repo, "rev-parse",
                   kept["kept_ref"]), f"refs/heads/{tree['branch']}") == ""  # fmt: skip


def test_task_whose_worktree_folder_was_deleted_runs_again_on_its_branch(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    tree = runner.task(task_id)["worktree"]
    import shutil

    shutil.rmtree(tree["path"])
    runner.ask("task.continue", task=task_id, prompt="Go on [fake:success]")
    again = runner.wait_status(task_id)
    assert again["status"] == "done", again.get("error")
    assert again["worktree"]["branch"] == tree["branch"]
    assert again["worktree"]["base_commit"] == tree["base_commit"]
    assert (Path(again["worktree"]["path"]) / "fake.txt").exists()
    assert git_out(git_repo, "merge-base", "--is-ancestor", tree["head_commit"],
                   f"refs/heads/{tree['branch']}") == ""  # fmt: skip


def test_kept_refs_never_make_the_task_branch_ambiguous(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = done_task(runner, demo)
    runner.ask("worktree.discard", task=task_id)
    runner.ask("task.continue", task=task_id, prompt="Again [fake:success]")
    branch = runner.wait_status(task_id)["worktree"]["branch"]
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", branch], cwd=git_repo, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "ambiguous" not in proc.stderr


def test_review_uses_the_repository_the_worktree_was_made_in(
    runner: Runner, demo: str, git_repo: Path, tmp_path: Path
) -> None:
    task_id = done_task(runner, demo)
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q", "-b", "main")
    _git(other, "commit", "-q", "--allow-empty", "-m", "other")
    runner.ask("list.config", list=demo, dir=str(other))
    runner.ask("worktree.merge", task=task_id)
    assert (git_repo / "fake.txt").exists()
    assert not (other / "fake.txt").exists()


def test_queue_and_continue_are_refused_while_a_review_is_under_way(
    runner: Runner, demo: str
) -> None:
    task_id = done_task(runner, demo)
    _append(
        runner, task_id, ev.ReviewStarted(action="merge", node_id=runner.ask("info")["node_id"])
    )
    wait_until(lambda: runner.task(task_id).get("review") == "merge", 10)
    for verb, payload in (("task.queue", {"tasks": [task_id]}),
                          ("task.continue", {"task": task_id, "prompt": "x"})):  # fmt: skip
        with pytest.raises(Exception, match="being merged"):
            runner.ask(verb, **payload)
    with pytest.raises(Exception, match="already being merged"):
        runner.ask("worktree.discard", task=task_id)
    _append(runner, task_id, ev.ReviewEnded(action="merge", error="test"))
    wait_until(lambda: runner.task(task_id).get("review") is None, 10)


def test_a_review_begun_by_a_node_that_is_gone_is_ended(runner: Runner, demo: str) -> None:
    task_id = done_task(runner, demo)
    _append(runner, task_id, ev.ReviewStarted(action="discard", node_id="ghost-node"))
    wait_until(lambda: audit_of(runner, task_id, "ReviewEnded"), 60)
    (ended,) = audit_of(runner, task_id, "ReviewEnded")
    assert "ghost-node stopped during the discard" in ended["payload"]["error"]
    assert runner.task(task_id).get("review") is None


def test_a_forged_worktree_path_in_the_log_is_never_worked_in_or_removed(
    runner: Runner, demo: str, tmp_path: Path
) -> None:
    task_id = done_task(runner, demo)
    tree = runner.task(task_id)["worktree"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("not ClaudeDo's\n")
    forged = ev.WorktreeCreated(
        path=str(elsewhere), branch=tree["branch"], base_branch="main",
        base_commit=tree["base_commit"], repo=tree["repo"],
    )  # fmt: skip
    _append(runner, task_id, forged)
    wait_until(lambda: runner.task(task_id)["worktree"]["path"] == str(elsewhere), 10)
    with contextlib.suppress(Exception):
        runner.ask("worktree.discard", task=task_id)
    runner.ask("task.continue", task=task_id, prompt="Go on [fake:success]")
    task = runner.wait_status(task_id)
    assert (elsewhere / "precious.txt").read_text() == "not ClaudeDo's\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]
    assert task["runs"][-1]["workdir"] != str(elsewhere)


def test_a_list_dir_in_a_sub_folder_runs_the_agent_in_that_folder_of_the_worktree(
    runner: Runner, git_repo: Path
) -> None:
    sub = git_repo / "service"
    sub.mkdir()
    (sub / "app.txt").write_text("app\n")
    _git(git_repo, "add", "service")
    _git(git_repo, "commit", "-q", "-m", "service")
    name = f"sub-{uuid.uuid4().hex[:8]}"
    runner.add_list(sub, name)
    task_id = done_task(runner, name)
    task = runner.task(task_id)
    tree = task["worktree"]
    assert task["runs"][0]["workdir"] == str(Path(tree["path"]) / "service")
    assert tree["repo"] == str(git_repo.resolve())
    files = git_out(git_repo, "show", "--name-only", "--format=", tree["branch"]).splitlines()
    assert files == ["service/fake.txt"]
