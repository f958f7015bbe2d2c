"""An agent process is read line by line and, when stopped, leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import psutil

from claudedo_actors.agent.process import AgentProcess, kill_run, processes_of_run
from claudedo_actors.agent.stream_json import StreamJsonReader
from tests.conftest import wait_until

FAKE = Path(__file__).resolve().parent / "fake_claude" / "claude"
ARGV = [str(FAKE), "-p", "--output-format", "stream-json", "--verbose"]


def _start(tmp_path: Path, scenario: str, **env: str) -> tuple[AgentProcess, list[bytes]]:
    lines: list[bytes] = []
    lock = threading.Lock()

    def on_line(line: bytes) -> None:
        with lock:
            lines.append(line)

    agent = AgentProcess(
        ARGV,
        tmp_path,
        {**os.environ, "FAKE_CLAUDE_SCENARIO": scenario, **env},
        "Do the thing\n",
        run_id=str(uuid.uuid4()),
        on_line=on_line,
    )
    return agent, lines


def test_lines_arrive_in_order_and_the_exit_code_is_kept(tmp_path: Path) -> None:
    agent, lines = _start(tmp_path, "success")
    assert agent.wait(30) == 0
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    assert reader.outcome(0).success and reader.line_count == 3


def test_a_10_mb_line_is_one_line(tmp_path: Path) -> None:
    agent, lines = _start(tmp_path, "big_line")
    assert agent.wait(60) == 0
    assert max(len(line) for line in lines) > 10_000_000


def test_stderr_tail_is_kept(tmp_path: Path) -> None:
    agent, _ = _start(tmp_path, "exit_without_result")
    assert agent.wait(30) == 3
    assert "the fake agent crashed" in agent.stderr_tail()


def test_stopping_a_run_kills_a_tool_child_in_its_own_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    agent, _ = _start(
        tmp_path, "tool_child", FAKE_CLAUDE_CHILD_PID_FILE=str(pid_file), FAKE_CLAUDE_CHILD_S="60"
    )
    wait_until(pid_file.exists, what="the tool child")
    child = int(pid_file.read_text())
    agent.stop(grace_s=5)
    assert processes_of_run(agent.run_id) == []
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "late.txt").exists()


def test_a_hanging_agent_is_escalated_to_sigkill(tmp_path: Path) -> None:
    agent, lines = _start(tmp_path, "hang")
    wait_until(lambda: lines, what="the init line")
    code = agent.stop(grace_s=0.3)
    assert code is not None and code < 0
    assert processes_of_run(agent.run_id) == []


def test_kill_run_finds_orphans_by_their_mark(tmp_path: Path) -> None:
    # A run whose agent is gone (a crashed node): only the mark finds its leftover tool child.
    pid_file = tmp_path / "child.pid"
    agent, _ = _start(
        tmp_path, "tool_child", FAKE_CLAUDE_CHILD_PID_FILE=str(pid_file), FAKE_CLAUDE_CHILD_S="60"
    )
    wait_until(pid_file.exists, what="the tool child")
    os.killpg(agent.pid, 9)
    agent.proc.wait(10)
    left = {p.pid for p in processes_of_run(agent.run_id)}
    assert int(pid_file.read_text()) in left  # the tool's shell (and its sleep) survived
    assert kill_run(agent.run_id) == len(left)
    assert processes_of_run(agent.run_id) == []


def test_the_run_mark_matches_whole_values_only(tmp_path: Path) -> None:
    # Processes of run "r-1x" and of run "r-1" are told apart: a mark is a whole environment
    # entry, not a prefix of one.
    procs = [
        subprocess.Popen(["sleep", "60"], env={**os.environ, "CLAUDEDO_RUN_ID": mark})
        for mark in ("r-1x", "r-1")
    ]
    try:
        # Just after exec the kernel may not yet show the new environment in /proc.
        for proc in procs:
            wait_until(
                lambda proc=proc: "CLAUDEDO_RUN_ID" in psutil.Process(proc.pid).environ(),
                what="the child's environment",
            )
        assert [p.pid for p in processes_of_run("r-1")] == [procs[1].pid]
        assert [p.pid for p in processes_of_run("r-1x")] == [procs[0].pid]
        assert processes_of_run("r-") == []
    finally:
        for p in procs:
            p.kill()
            p.wait()
