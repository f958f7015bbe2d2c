"""Actors that crash and nodes that die at exact moments: runs are still finalized, tasks
settled, healthy runs left alone, and "retry once" holds. Faults are fired by named points in
the real node (claudedo_actors/runner/faults.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from tests.runner_support import Runner, git_out, processes_marked


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    made: list[Runner] = []

    def make(faults: str, slots: int = 2, **env: str) -> Runner:
        r = Runner(tmp_path, slots=slots, env={"CLAUDEDO_FAULTS": faults, **env},
                   name=f"home-{len(made)}").start()  # fmt: skip
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def _list(runner: Runner, repo: Path | None) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    runner.add_list(repo, name)
    return name


def test_a_restarted_queue_leaves_this_nodes_live_runs_running(
    make_runner: callable,
    git_repo: Path,  # type: ignore[valid-type]
) -> None:
    runner = make_runner("queue.scan_while_running", FAKE_CLAUDE_SLOW_S="120")
    name = _list(runner, git_repo)
    slow = runner.add_task("Take long [fake:slow]", name)
    run = runner.wait_run(slow)
    # Work that makes the queue scan while the slow run is live: the scan crashes the queue
    # once, the supervisor starts a new one, and the new one hands out the later tasks.
    for title in ("Quick [fake:success]", "Quick again [fake:success]"):
        assert runner.wait_status(runner.add_task(title, name))["status"] == "done"
    task = runner.task(slow)
    assert task["status"] == "running" and task["runs"][0]["finished_at"] is None
    assert psutil.pid_exists(run["pid"]) and processes_marked(slow)
    runner.ask("task.cancel", tasks=[slow])
    ended = runner.wait_status(slow)
    assert ended["status"] == "cancelled" and ended["run_count"] == 1
    assert ended["runs"][0]["cause"] == "cancelled"


def test_a_slot_that_crashes_finalizes_its_run_and_fails_the_task(
    make_runner: callable,
    git_repo: Path,  # type: ignore[valid-type]
) -> None:
    runner = make_runner("slot.run_started")
    name = _list(runner, git_repo)
    task_id = runner.add_task("Crash the slot [fake:slow]", name)
    task = runner.wait_status(task_id)
    assert task["status"] == "failed" and task["cause"] == "agent_error"
    assert "fault injected at slot.run_started" in task["error"]
    (run,) = task["runs"]
    assert run["finished_at"] is not None and run["success"] is False
    wait_until(lambda: not processes_marked(task_id), 20, "no process of the task left")
    # The replaced slot runs the next task.
    assert runner.wait_status(runner.add_task("Next [fake:success]", name))["status"] == "done"


def test_a_run_actor_that_crashes_finalizes_its_run_and_the_task_is_settled(
    make_runner: callable,
    git_repo: Path,  # type: ignore[valid-type]
) -> None:
    runner = make_runner("run.session_opened")
    name = _list(runner, git_repo)
    task_id = runner.add_task("Crash the run [fake:slow]", name)
    task = runner.wait_status(task_id, timeout_s=90)
    first = task["runs"][0]
    assert first["finished_at"] is not None and first["success"] is False
    assert "fault injected at run.session_opened" in first["error"]
    assert task["status"] in ("done", "failed") and task["run_count"] <= 2
    wait_until(lambda: not processes_marked(task_id), 20, "no process of the task left")


def test_node_killed_after_a_successful_runs_finish_completes_without_running_again(
    make_runner: callable,
    git_repo: Path,  # type: ignore[valid-type]
) -> None:
    runner = make_runner("node.after_run_finished:exit")
    name = _list(runner, git_repo)
    task_id = runner.add_task("Write it [fake:write]", name)
    assert runner.node.proc is not None
    runner.node.proc.wait(60)  # the node died right after RunFinished was stored
    runner.node.extra_env.pop("CLAUDEDO_FAULTS")
    runner.node.start()
    task = runner.wait_status(task_id)
    assert task["status"] == "done" and task["run_count"] == 1
    assert [c["scenario"] for c in runner.agent_calls()] == ["write"]
    tree = task["worktree"]
    assert git_out(git_repo, "show", f"{tree['head_commit']}:fake.txt") == (
        "written by the fake agent"
    )
    assert "WorktreeCommitted" in runner.events(task_id)


def test_node_killed_after_the_retrys_finish_fails_without_a_third_run(
    make_runner: callable,
    git_repo: Path,  # type: ignore[valid-type]
) -> None:
    runner = make_runner("node.after_run_finished.2:exit")
    name = _list(runner, git_repo)
    task_id = runner.add_task("Fail twice [fake:fail_twice]", name)
    assert runner.node.proc is not None
    runner.node.proc.wait(60)
    runner.node.start()
    task = runner.wait_status(task_id)
    assert task["status"] == "failed" and task["run_count"] == 2
    assert len(runner.agent_calls()) == 2
