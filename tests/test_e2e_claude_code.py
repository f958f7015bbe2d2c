"""End to end with the real Claude Code CLI (npm, pinned) against a scripted Messages API.

The CLI, pinned by CLAUDE_CODE_VERSION below, is installed from npm by the first test that
needs it into `.e2e/claude-code-<version>/` (ignored by git); without npm these tests are
skipped with that reason. The model is scripted (tests/scripted_api.py):
everything else, from the CLI's tools to its sessions, is the real thing.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from tests.runner_support import Runner, git_out, processes_marked
from tests.scripted_api import Fail, ScriptedApi, Text, Tool, by_turn

CLAUDE_CODE_VERSION = "2.1.328"
E2E_DIR = Path(__file__).resolve().parent.parent / ".e2e" / f"claude-code-{CLAUDE_CODE_VERSION}"
_LATE_WRITER = "python3 -c \"import time; time.sleep(25); open('late.txt', 'w').write('late')\""


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    """The pinned Claude Code CLI, installed once into .e2e/."""
    binary = E2E_DIR / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the end-to-end tests need it to get Claude Code")
        E2E_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(E2E_DIR), "--no-audit", "--no-fund", "--save-exact",
             "--loglevel=error", f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith(CLAUDE_CODE_VERSION), version.stdout + version.stderr
    return binary


@pytest.fixture(scope="module")
def api() -> Iterator[ScriptedApi]:
    server = ScriptedApi().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runner(
    claude_bin: Path, api: ScriptedApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    base = tmp_path_factory.mktemp("e2e")
    env = {
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": "sk-ant-dummy-key-for-tests",
        "HOME": str(base / "user-home"),  # the CLI keeps its sessions here
        "CLAUDE_CODE_MAX_RETRIES": "0",  # the CLI's own retries; ClaudeDo still retries once
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    (base / "user-home").mkdir()
    r = Runner(base, slots=2, claude_bin=str(claude_bin), env=env).start()
    yield r
    r.stop()


@pytest.fixture
def demo(runner: Runner, git_repo: Path) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    runner.add_list(git_repo, name)
    return name


def test_real_cli_writes_a_file_runs_bash_and_its_work_is_committed(
    runner: Runner, api: ScriptedApi, demo: str, git_repo: Path
) -> None:
    api.script = by_turn(
        Tool("Write", {"file_path": "{cwd}/hello.txt", "content": "hi from the model\n"}),
        Tool("Bash", {"command": "echo bash-was-here > bash.txt", "description": "write"}),
        Text("Both files are there."),
    )
    task_id = runner.add_task("Make two files", demo)
    task = runner.wait_status(task_id, timeout_s=120)
    assert (task["status"], task["result"]) == ("done", "Both files are there.")
    branch = f"claudedo/{task_id.replace('-', '')}"
    files = git_out(git_repo, "show", "--name-only", "--format=", branch).splitlines()
    assert sorted(files) == ["bash.txt", "hello.txt"]
    assert git_out(git_repo, "show", f"{branch}:bash.txt") == "bash-was-here"
    (run,) = runner.ask("runs", task=task_id)
    assert run["success"] and run["session_id"] and run["cli_version"] == CLAUDE_CODE_VERSION
    assert run["turn_count"] == 3 and run["tokens_in"] > 0 and run["tokens_out"] > 0
    assert run["cost_usd"] > 0
    (finished,) = [
        e["payload"] for e in runner.ask("audit", task=task_id) if e["type"] == "RunFinished"
    ]
    assert (finished["terminal_reason"], finished["permission_denials"]) == ("completed", [])
    assert processes_marked(task_id) == []


def test_a_write_outside_the_worktree_is_refused_and_recorded_as_a_permission_denial(
    runner: Runner, api: ScriptedApi, demo: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"  # acceptEdits lets the agent edit its worktree only
    write = {"file_path": str(outside), "content": "should not be here\n"}
    api.script = by_turn(Tool("Write", write), Text("Could not write it."))
    task_id = runner.add_task("Write elsewhere", demo)
    task = runner.wait_status(task_id, timeout_s=120)
    assert (task["status"], task["result"]) == ("done", "Could not write it.")
    assert not outside.exists()
    (finished,) = [
        e["payload"] for e in runner.ask("audit", task=task_id) if e["type"] == "RunFinished"
    ]
    (denial,) = finished["permission_denials"]
    assert (denial["tool_name"], denial["tool_input"]) == ("Write", write)
    assert denial["tool_use_id"]
    (run,) = runner.ask("runs", task=task_id)  # the run's record says so too
    assert run["terminal_reason"] == "completed"
    assert [d["tool_name"] for d in run["permission_denials"]] == ["Write"]


def test_continue_resumes_the_session_and_the_api_sees_the_earlier_conversation(
    runner: Runner, api: ScriptedApi, demo: str
) -> None:
    api.script = by_turn(Text("First answer."))
    task_id = runner.add_task("Remember the word pelican", demo)
    assert runner.wait_status(task_id, timeout_s=120)["status"] == "done"
    seen = len(api.requests)
    api.script = by_turn(Text("Still here."), Text("Still here."))
    runner.ask("task.continue", task=task_id, prompt="What was the word?")
    task = runner.wait_status(task_id, timeout_s=120)
    assert task["status"] == "done" and task["result"] == "Still here."
    run1, run2 = runner.ask("runs", task=task_id)
    assert run2["is_continue"] and run2["session_id"] == run1["session_id"]
    later = [r for r in api.requests[seen:] if r.get("tools")]
    conversation = str(later[0]["messages"])
    assert "Remember the word pelican" in conversation and "First answer." in conversation
    assert "What was the word?" in conversation


def test_cancel_while_a_bash_command_runs_leaves_no_process_and_no_late_file(
    runner: Runner, api: ScriptedApi, demo: str
) -> None:
    api.script = by_turn(
        # 2.1.328's Bash tool refuses a plain `sleep N; cmd` (use Monitor, it says): a python3
        # child sleeping is as long a command, and it would write late.txt when done.
        Tool("Bash", {"command": _LATE_WRITER, "description": "wait"}),
        Text("Waited."),
    )
    task_id = runner.add_task("Wait a while", demo)

    def sleeping() -> list[psutil.Process]:
        found = []
        for pid in processes_marked(task_id):
            try:  # processes of the run come and go while we look
                proc = psutil.Process(pid)
                if "sleep" in " ".join(proc.cmdline()):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    sleepers = wait_until(sleeping, 120, "the Bash tool's sleep to run")
    runner.ask("task.cancel", tasks=[task_id])
    task = runner.wait_status(task_id, timeout_s=60)
    assert task["status"] == "cancelled"
    assert processes_marked(task_id) == []
    # Killed: each is gone, or a zombie (dead, waiting for whoever adopted it to reap it).
    # A process still exiting at this instant gets a moment; a survivor fails the wait.
    wait_until(
        lambda: all(_status(p) in ("gone", "zombie") for p in sleepers),
        10,
        "the killed sleep processes to be dead",
    )
    assert not (Path(task["worktree"]["path"]) / "late.txt").exists()


def test_persistent_http_500_fails_with_api_error_after_the_retry(
    runner: Runner, api: ScriptedApi, demo: str
) -> None:
    api.script = by_turn(Fail(500))
    task_id = runner.add_task("Doomed", demo)
    task = runner.wait_status(task_id, timeout_s=120)
    assert (task["status"], task["cause"]) == ("failed", "api_error")
    runs = runner.ask("runs", task=task_id)
    assert [r["is_retry"] for r in runs] == [False, True]
    assert all(r["cause"] == "api_error" for r in runs)


def _status(proc: psutil.Process) -> str:
    try:
        return str(proc.status()) if proc.is_running() else "gone"
    except psutil.NoSuchProcess:
        return "gone"
