"""The fake agent is a faithful stand-in: real process, the real CLI's stream-json, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from claudedo_actors.agent.stream_json import StreamJsonReader
from tests.conftest import wait_until

FAKE = Path(__file__).resolve().parent / "fake_claude" / "claude"
ARGS = ["-p", "--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-6"]


def _start(
    tmp_path: Path, scenario: str, *extra: str, prompt: str = "Do the thing\n", **env: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(FAKE), *ARGS, *extra],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "FAKE_CLAUDE_SCENARIO": scenario,
             "FAKE_CLAUDE_LOG": str(tmp_path / "calls.jsonl"), **env},
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(prompt.encode())
    proc.stdin.close()
    proc.stdin = None  # the prompt went on stdin; communicate() must not touch it
    return proc


def _finish(proc: subprocess.Popen[bytes], **flags: bool):  # type: ignore[no-untyped-def]
    out, err = proc.communicate(timeout=60)
    reader = StreamJsonReader()
    for line in out.splitlines():
        reader.feed(line)
    return reader, reader.outcome(proc.returncode, err.decode(), **flags)


@pytest.mark.parametrize(
    ("scenario", "success", "cause"),
    [
        ("success", True, None),
        ("write", True, None),
        ("bash", True, None),
        ("fail_twice", False, "api_error"),
        ("fail_then_succeed", False, "api_error"),
        ("no_session", False, "agent_error"),
        ("nologin", False, "auth"),
        ("max_turns", False, "max_turns"),
        ("budget", False, "budget"),
        ("rate_limited", False, "rate_limited"),
        ("garbage", True, None),
        ("big_line", True, None),
        ("exit_without_result", False, "no_result"),
    ],
)
def test_scenarios_end_as_the_real_cli_does(
    tmp_path: Path, scenario: str, success: bool, cause: str | None
) -> None:
    reader, out = _finish(_start(tmp_path, scenario))
    assert (out.success, out.cause) == (success, cause)
    assert (reader.session is None) == (scenario == "no_session")
    call = json.loads((tmp_path / "calls.jsonl").read_text())
    assert call["prompt"] == "Do the thing\n" and call["cwd"] == str(tmp_path)


def test_resuming_keeps_the_session_and_can_succeed(tmp_path: Path) -> None:
    _first_reader, first = _finish(_start(tmp_path, "fail_then_succeed"))
    assert first.session_id is not None
    again = _start(tmp_path, "fail_then_succeed", "--resume", first.session_id)
    _reader, out = _finish(again)
    assert out.success and out.session_id == first.session_id


def test_resume_works_only_in_the_sessions_working_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _reader, first = _finish(_start(tmp_path / "a", "success"))
    _reader, elsewhere = _finish(
        _start(tmp_path / "b", "success", "--resume", str(first.session_id))
    )
    assert not elsewhere.success and elsewhere.cause == "agent_error"


def test_the_prompt_marker_chooses_the_scenario_and_the_session_keeps_it(tmp_path: Path) -> None:
    proc = _start(tmp_path, "success", prompt="Fix it [fake:fail_twice]")
    _reader, first = _finish(proc)
    assert first.cause == "api_error"
    _reader, again = _finish(_start(tmp_path, "success", "--resume", str(first.session_id)))
    assert again.cause == "api_error"  # the resumed session keeps its scenario


def test_write_and_bash_leave_their_files(tmp_path: Path) -> None:
    _finish(_start(tmp_path, "write"))
    _finish(_start(tmp_path, "bash"))
    assert (tmp_path / "fake.txt").exists() and (tmp_path / "bash.txt").exists()


def test_sigint_while_streaming_ends_with_a_result(tmp_path: Path) -> None:
    proc = _start(tmp_path, "slow")
    assert proc.stdout is not None
    proc.stdout.readline()  # the init line: the answer is streaming
    proc.send_signal(signal.SIGINT)
    _reader, out = _finish(proc)
    assert proc.returncode == 0 and out.cause == "agent_error"  # error_during_execution


def test_a_tool_child_outlives_a_group_kill_but_not_sigint(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    env = {"FAKE_CLAUDE_CHILD_PID_FILE": str(pid_file), "FAKE_CLAUDE_CHILD_S": "60"}

    proc = _start(tmp_path, "tool_child", **env)
    wait_until(pid_file.exists, what="the tool child")
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    _, out = _finish(proc)
    assert (out.cause == "agent_error" and not psutil.pid_exists(child)) or _zombie(child)

    pid_file.unlink()
    proc = _start(tmp_path, "tool_child", **env)
    wait_until(pid_file.exists, what="the tool child")
    child = int(pid_file.read_text())
    os.killpg(proc.pid, signal.SIGKILL)  # what killing the agent's group does
    proc.wait(10)
    try:
        assert psutil.Process(child).is_running() and not _zombie(child)  # the hazard is real
    finally:
        os.killpg(child, signal.SIGKILL)


def test_a_hanging_agent_ignores_sigint_and_sigterm(tmp_path: Path) -> None:
    proc = _start(tmp_path, "hang")
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)
    proc.kill()
    assert proc.wait(10) == -signal.SIGKILL


def test_stream_json_without_verbose_is_refused_like_the_real_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(FAKE), "-p", "--output-format", "stream-json"], input=b"x", capture_output=True
    )
    assert result.returncode == 1 and b"requires --verbose" in result.stderr


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
