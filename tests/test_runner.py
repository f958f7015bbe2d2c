"""Running queued tasks with the agent, as the reference worker does (DESIGN.md rules 1-12).

One node with four slots serves the module; each test has its own list, repository and tasks.
The agent is the fake one: a real process speaking Claude Code 2.1.328's stream-json.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.runner_support import Runner, git_out, processes_marked


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(tmp_path_factory.mktemp("runner"), slots=4, env={"FAKE_CLAUDE_CHILD_S": "3"})
    r.start()
    yield r
    r.stop()


@pytest.fixture
def demo(runner: Runner, git_repo: Path) -> str:
    """A list of this test's own, on this test's repository; returns its name."""
    name = f"demo-{uuid.uuid4().hex[:8]}"
    runner.add_list(git_repo, name)
    return name


def calls_of(runner: Runner, task_id: str) -> list[dict[str, Any]]:
    return [c for c in runner.agent_calls() if c["cwd"].endswith(task_id)]


# --- a run, start to end ----------------------------------------------------------------------


def test_queued_task_runs_in_its_own_worktree_and_its_changes_are_committed(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    head = git_out(git_repo, "rev-parse", "HEAD")
    task_id = runner.add_task("Write the file [fake:write]", demo)
    task = runner.wait_status(task_id)
    assert task["status"] == "done" and task["result"]
    tree = task["worktree"]
    branch = f"claudedo/{task_id.replace('-', '')}"
    assert (tree["kind"], tree["branch"], tree["base_branch"]) == ("worktree", branch, "main")
    assert tree["base_commit"] == head and tree["commit_count"] == 1
    assert Path(tree["path"]).is_dir() and task_id in tree["path"]
    # The commit: on the task's branch, by ClaudeDo, with the agent's file.
    assert git_out(git_repo, "log", "-1", "--format=%an <%ae>|%cn", branch) == (
        "ClaudeDo <claudedo@localhost>|ClaudeDo"
    )
    assert git_out(git_repo, "show", "--name-only", "--format=", branch) == "fake.txt"
    assert task_id in git_out(git_repo, "log", "-1", "--format=%B", branch)
    assert tree["files_changed"] == 1 and tree["insertions"] == 1
    # The user's own tree is untouched.
    assert git_out(git_repo, "rev-parse", "HEAD") == head
    assert git_out(git_repo, "status", "--porcelain") == ""
    assert runner.events(task_id) == [
        "TaskCreated", "TaskQueued", "TaskClaimed", "TaskStarted", "WorktreeCreated",
        "RunStarted", "RunProcessSpawned", "RunSessionOpened", "RunFinished",
        "WorktreeCommitted", "TaskCompleted",
    ]  # fmt: skip
    assert processes_marked(task_id) == []


def test_the_run_records_session_tokens_cost_and_its_transcript(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Say hello", demo)
    runner.wait_status(task_id)
    (run,) = runner.ask("runs", task=task_id)
    assert run["success"] and run["run_number"] == 1 and not run["is_retry"]
    assert run["session_id"] and run["cli_version"] == "2.1.328"
    assert run["model"] == "claude-sonnet-4-6" and run["permission_mode"] == "acceptEdits"
    assert run["tokens_in"] > 0 and run["tokens_out"] > 0 and run["cost_usd"] > 0
    assert run["turn_count"] == 1 and run["exit_code"] == 0 and run["cause"] is None
    log = Path(run["log_path"])
    assert log.is_absolute() and log.name == f"{task_id}_run1.ndjson"
    data = log.read_bytes()
    assert data.count(b"\n") == run["line_count"] > 2
    assert hashlib.sha256(data).hexdigest() == run["transcript_sha256"]


def test_prompt_is_title_description_and_subtask_checklist(runner: Runner, demo: str) -> None:
    task_id = runner.add_task(
        "Add retry", demo, description="  Use backoff.  \n", subtasks=["First", "Second"],
        queue=False,
    )  # fmt: skip
    runner.ask("task.subtask.done", task=task_id, subtasks=["1"])
    runner.ask("task.queue", tasks=[task_id])
    runner.wait_status(task_id)
    prompt = calls_of(runner, task_id)[0]["prompt"]
    assert prompt == "Add retry\n\nUse backoff.\n\n## Sub-Tasks\n- [x] First\n- [ ] Second\n"
    plain = runner.add_task("Just the title", demo)
    runner.wait_status(plain)
    assert calls_of(runner, plain)[0]["prompt"] == "Just the title"


def test_agent_arguments_and_settings_task_over_list_over_default(
    runner: Runner, git_repo: Path, tmp_path: Path
) -> None:
    agent = tmp_path / "reviewer.md"
    agent.write_text(
        "---\nname: reviewer\ndescription: Reviews\ntools: Read, Grep\n---\nBe strict.\n"
    )
    name = f"cfg-{uuid.uuid4().hex[:8]}"
    runner.add_list(
        git_repo, name, model="list-model", system_prompt="Be brief.", max_turns=7,
        agent_path=str(agent),
    )  # fmt: skip
    by_list = runner.add_task("Defaults from the list", name)
    by_task = runner.add_task(
        "Own settings", name, model="task-model", max_budget_usd=0.5,
        permission_mode="plan", allowed_tools=["Read", "Edit"],
    )  # fmt: skip
    runner.wait_status(by_list)
    runner.wait_status(by_task)
    argv = calls_of(runner, by_list)[0]["argv"]
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    opts = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert opts["--model"] == "list-model" and opts["--append-system-prompt"] == "Be brief."
    assert opts["--permission-mode"] == "acceptEdits" and opts["--allowedTools"] == "Bash"
    assert opts["--max-turns"] == "7" and "--max-budget-usd" not in opts
    assert opts["--agent"] == "reviewer"
    assert (
        '"prompt": "Be strict."' in opts["--agents"]
        and '"tools": ["Read", "Grep"]' in opts["--agents"]
    )
    argv = calls_of(runner, by_task)[0]["argv"]
    opts = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert opts["--model"] == "task-model" and opts["--max-budget-usd"] == "0.5"
    assert opts["--permission-mode"] == "plan" and opts["--allowedTools"] == "Read,Edit"


def test_a_list_without_dir_runs_in_a_sandbox_folder(runner: Runner) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    runner.add_list(None, name)
    task_id = runner.add_task("No repo [fake:write]", name)
    task = runner.wait_status(task_id)
    assert task["status"] == "done" and task["worktree"]["kind"] == "sandbox"
    assert Path(task["worktree"]["path"], "fake.txt").exists()
    assert "SandboxCreated" in runner.events(task_id) and "WorktreeCommitted" not in runner.events(
        task_id
    )


def test_a_run_without_changes_makes_no_commit(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Only talk", demo)
    task = runner.wait_status(task_id)
    assert task["status"] == "done" and task["worktree"]["commit_count"] == 0
    assert "WorktreeCommitted" not in runner.events(task_id)


# --- failures and the automatic retry --------------------------------------------------------


def test_failed_run_with_session_is_retried_once_resuming_it(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Flaky [fake:fail_then_succeed]", demo)
    task = runner.wait_status(task_id)
    assert task["status"] == "done"
    first, retry = runner.ask("runs", task=task_id)
    assert not first["success"] and first["cause"] == "api_error"
    assert retry["is_retry"] and retry["success"]
    assert retry["resume_session_id"] == first["session_id"] == retry["session_id"]
    calls = calls_of(runner, task_id)
    assert calls[1]["resumed"] == first["session_id"]
    assert calls[1]["prompt"] == (
        f"The previous attempt failed with:\n\n{first['error']}\n\nTry again and fix the issues."
    )
    assert runner.events(task_id).count("RunStarted") == 2  # run 1 is announced too


def test_failure_twice_fails_the_task_after_one_retry(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Broken [fake:fail_twice]", demo)
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("failed", "api_error")
    assert task["error"].startswith("API Error: 500")
    assert [r["is_retry"] for r in runner.ask("runs", task=task_id)] == [False, True]


def test_failure_without_session_is_not_retried(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("No session [fake:no_session]", demo)
    task = runner.wait_status(task_id)
    assert task["status"] == "failed"
    (run,) = runner.ask("runs", task=task_id)
    assert run["session_id"] is None and run["exit_code"] == 1


@pytest.mark.parametrize(
    ("scenario", "cause", "runs"),
    [
        ("nologin", "auth", 2),
        ("max_turns", "max_turns", 2),
        ("rate_limited", "rate_limited", 2),
        ("overloaded", "overloaded", 2),
        ("budget", "budget", 1),  # a retry would spend past the budget
        ("exit_without_result", "no_result", 2),
    ],
)
def test_every_failed_run_records_its_cause(
    runner: Runner, demo: str, scenario: str, cause: str, runs: int
) -> None:
    task_id = runner.add_task(f"Fails [fake:{scenario}]", demo)
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("failed", cause)
    recorded = runner.ask("runs", task=task_id)
    assert len(recorded) == runs and all(r["cause"] == cause for r in recorded)


@pytest.mark.parametrize(
    ("limits", "retry_gets"),
    [
        ({"max_turns": 5}, {"--max-turns": "3"}),
        ({"max_budget_usd": 0.002}, {"--max-budget-usd": "0.00092"}),
        ({"max_turns": 2}, None),
        ({"max_budget_usd": 0.001}, None),
    ],
)
def test_a_run_and_its_retry_together_keep_to_the_tasks_limits(
    runner: Runner, demo: str, limits: dict[str, Any], retry_gets: dict[str, str] | None
) -> None:
    # The max_turns transcript: 2 turns, $0.00108, then a failure with a session to resume.
    # Claude Code counts limits per invocation, so the retry is given what run 1 left; when
    # nothing is left there is no retry, and the task fails with run 1's error.
    task_id = runner.add_task("Fails [fake:max_turns]", demo, **limits)
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("failed", "max_turns")
    calls = calls_of(runner, task_id)
    if retry_gets is None:
        assert len(calls) == 1
        return
    assert len(calls) == 2 and "--resume" in calls[1]["argv"]
    opts = dict(zip(calls[1]["argv"][4::2], calls[1]["argv"][5::2], strict=False))
    assert {k: opts[k] for k in retry_gets} == retry_gets


def test_exit_without_result_keeps_the_stderr_tail_and_exit_code(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Crashes [fake:exit_without_result]", demo)
    runner.wait_status(task_id)
    run = runner.ask("runs", task=task_id)[0]
    assert run["exit_code"] == 3 and "fake agent crashed" in run["error"]


def test_garbage_and_a_10mb_line_are_kept_in_the_log(runner: Runner, demo: str) -> None:
    garbage = runner.add_task("Noisy [fake:garbage]", demo)
    big = runner.add_task("Big [fake:big_line]", demo)
    assert runner.wait_status(garbage)["status"] == "done"
    assert runner.wait_status(big)["status"] == "done"
    g = runner.ask("runs", task=garbage)[0]
    assert b"this is not JSON\n" in Path(g["log_path"]).read_bytes()
    b = runner.ask("runs", task=big)[0]
    lines = Path(b["log_path"]).read_bytes().split(b"\n")
    assert max(len(line) for line in lines) > 10_000_000 and b["line_count"] == len(lines) - 1


# --- time limits, cancel ---------------------------------------------------------------------


def test_wall_clock_timeout_ends_the_run_as_failed(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Too slow [fake:slow]", demo, timeout_s=1.0)
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("failed", "timeout")
    assert processes_marked(task_id) == []


def test_cancel_while_running_ends_cancelled_and_leaves_no_process(
    runner: Runner, demo: str
) -> None:
    task_id = runner.add_task("Slow [fake:slow]", demo)
    runner.wait_run(task_id)
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("cancelled", "cancelled")
    (run,) = runner.ask("runs", task=task_id)
    assert (run["error"], run["exit_code"], run["cause"]) == ("Cancelled.", -1, "cancelled")
    assert processes_marked(task_id) == []
    assert runner.events(task_id)[-3:] == ["TaskCancelRequested", "RunFinished", "TaskCancelled"]


def test_cancel_kills_a_tool_child_in_its_own_session(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Sleeps in a tool [fake:tool_child]", demo)
    run = runner.wait_run(task_id)
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id)
    assert task["status"] == "cancelled"
    assert processes_marked(task_id) == []
    # The tool child would have written late.txt after 3 s: it is dead, so it never will.
    late = Path(run["workdir"]) / "late.txt"
    assert not late.exists()


def test_cancel_of_a_hung_agent_escalates_to_kill(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Hangs [fake:hang]", demo)
    runner.wait_run(task_id)
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id, timeout_s=60)
    assert task["status"] == "cancelled" and processes_marked(task_id) == []


def test_cancel_during_the_retry_ends_cancelled(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Fails then hangs [fake:fail_then_slow]", demo)
    runner.wait_run(task_id, run_number=2)
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id)
    assert task["status"] == "cancelled"
    runs = runner.ask("runs", task=task_id)
    assert [r["is_retry"] for r in runs] == [False, True] and runs[1]["cause"] == "cancelled"
    assert processes_marked(task_id) == []


# --- continue --------------------------------------------------------------------------------


def test_continue_resumes_the_latest_session_in_the_same_worktree(
    runner: Runner, demo: str, git_repo: Path
) -> None:
    task_id = runner.add_task("First part [fake:write]", demo)
    first = runner.wait_status(task_id)
    reply = runner.ask("task.continue", task=task_id, prompt="Now the second part")
    assert reply["status"] in ("queued", "claimed", "running", "done")
    task = runner.wait_status(task_id)
    assert task["status"] == "done"
    run1, run2 = runner.ask("runs", task=task_id)
    assert run2["is_continue"] and not run2["is_retry"]
    assert run2["resume_session_id"] == run1["session_id"] == run2["session_id"]
    call = calls_of(runner, task_id)[-1]
    assert call["prompt"] == "Now the second part" and call["resumed"] == run1["session_id"]
    assert call["history"] == ["First part [fake:write]", "Now the second part"]
    assert task["worktree"]["path"] == first["worktree"]["path"]
    assert runner.events(task_id).count("WorktreeCreated") == 1


def test_a_failed_continue_is_not_retried(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Fine", demo)
    runner.wait_status(task_id)
    runner.ask("task.continue", task=task_id, prompt="Break now [fake:fail_twice]")
    task = runner.wait_status(task_id)
    assert task["status"] == "failed"
    assert [r["is_continue"] for r in runner.ask("runs", task=task_id)] == [False, True]


def test_continue_needs_a_previous_run_with_a_session(runner: Runner, demo: str) -> None:
    draft = runner.add_task("Never ran", demo, queue=False)
    with pytest.raises(Exception, match="No previous run to continue"):
        runner.ask("task.continue", task=draft, prompt="go on")
    sessionless = runner.add_task("No session [fake:no_session]", demo)
    runner.wait_status(sessionless)
    with pytest.raises(Exception, match="Previous run has no session ID"):
        runner.ask("task.continue", task=sessionless, prompt="go on")


def test_cancel_during_continue_ends_cancelled(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Quick", demo)
    runner.wait_status(task_id)
    runner.ask("task.continue", task=task_id, prompt="Now slowly [fake:slow]")
    runner.wait_run(task_id, run_number=2)
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id)
    assert task["status"] == "cancelled" and processes_marked(task_id) == []


def test_rerunning_a_done_task_reuses_its_worktree(runner: Runner, demo: str) -> None:
    task_id = runner.add_task("Twice [fake:write]", demo)
    first = runner.wait_status(task_id)
    runner.ask("task.queue", tasks=[task_id])
    wait_until(lambda: len(runner.task(task_id)["runs"]) == 2, 30, "second run")
    again = runner.wait_status(task_id)
    assert again["worktree"]["path"] == first["worktree"]["path"]
    assert [r["is_continue"] or r["is_retry"] for r in again["runs"]] == [False, False]
