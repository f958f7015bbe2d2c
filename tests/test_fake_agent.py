"""The fake agent is a faithful stand-in for each CLI version: real process, its stream-json,
its signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from claudedo_actors.agent.stream_json import RunOutcome, StreamJsonReader
from tests.conftest import wait_until

FAKE = Path(__file__).resolve().parent / "fake_claude" / "claude"
ARGS = ["-p", "--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-6"]
VERSIONS = ("2.1.197", "2.1.328")


def _start(
    tmp_path: Path,
    scenario: str,
    *extra: str,
    version: str | None = "2.1.328",
    prompt: str = "Do the thing\n",
    **env: str,
) -> subprocess.Popen[bytes]:
    """The fake agent playing `version` (None: the fake's default)."""
    environ = {k: v for k, v in os.environ.items() if k != "FAKE_CLAUDE_VERSION"}
    if version is not None:
        environ["FAKE_CLAUDE_VERSION"] = version
    proc = subprocess.Popen(
        [str(FAKE), *ARGS, *extra],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**environ, "FAKE_CLAUDE_SCENARIO": scenario,
             "FAKE_CLAUDE_LOG": str(tmp_path / "calls.jsonl"), **env},
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(prompt.encode())
    proc.stdin.close()
    proc.stdin = None  # the prompt went on stdin; communicate() must not touch it
    return proc


def _finish(
    proc: subprocess.Popen[bytes], **flags: bool
) -> tuple[StreamJsonReader, RunOutcome, list[bytes]]:
    out, err = proc.communicate(timeout=60)
    reader = StreamJsonReader()
    lines = out.splitlines()
    for line in lines:
        reader.feed(line)
    return reader, reader.outcome(proc.returncode, err.decode(), **flags), lines


@pytest.mark.parametrize("version", VERSIONS)
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
        ("overloaded", False, "overloaded"),
        ("garbage", True, None),
        ("big_line", True, None),
        ("exit_without_result", False, "no_result"),
    ],
)
def test_scenarios_end_as_the_real_cli_does(
    tmp_path: Path, version: str, scenario: str, success: bool, cause: str | None
) -> None:
    reader, out, _ = _finish(_start(tmp_path, scenario, version=version))
    assert (out.success, out.cause) == (success, cause)
    if scenario == "no_session":
        assert reader.session is None and out.session_id is None
    else:
        assert reader.session is not None and reader.session.cli_version == version
        assert reader.session.model == "claude-sonnet-4-6"  # as --model said
    call = json.loads((tmp_path / "calls.jsonl").read_text())
    assert call["prompt"] == "Do the thing\n" and call["cwd"] == str(tmp_path)


def test_api_errors_carry_their_type_from_2_1_328_on(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    _, _, old = _finish(_start(tmp_path / "old", "overloaded", version="2.1.197"))
    _, _, new = _finish(_start(tmp_path / "new", "overloaded", version="2.1.328"))
    old_result, new_result = json.loads(old[-1]), json.loads(new[-1])
    assert old_result["api_error_status"] == new_result["api_error_status"] == 529
    assert "api_error_type" not in old_result
    assert new_result["api_error_type"] == "overloaded_error"


def test_the_default_version_is_the_one_users_run(tmp_path: Path) -> None:
    reader, out, lines = _finish(_start(tmp_path, "success", version=None))
    assert out.success and reader.session is not None
    assert reader.session.cli_version == "2.1.328"
    assert not lines[-1].startswith(b'{"type"')  # 2.1.328's result line, as recorded
    shown = subprocess.run(
        [str(FAKE), "--version"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "FAKE_CLAUDE_VERSION"},
    )
    assert shown.stdout == "2.1.328 (Claude Code)\n"


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    proc = _start(tmp_path, "success", version="9.9.9")
    _, out, lines = _finish(proc)
    assert proc.returncode == 2 and lines == [] and out.cause == "no_result"
    assert "FAKE_CLAUDE_VERSION" in (out.error or "")


@pytest.mark.parametrize("version", VERSIONS)
def test_resuming_keeps_the_session_and_can_succeed(tmp_path: Path, version: str) -> None:
    _, first, _ = _finish(_start(tmp_path, "fail_then_succeed", version=version))
    assert first.session_id is not None
    again = _start(tmp_path, "fail_then_succeed", "--resume", first.session_id, version=version)
    _, out, _ = _finish(again)
    assert out.success and out.session_id == first.session_id


@pytest.mark.parametrize(("version", "found"), [("2.1.197", False), ("2.1.328", True)])
def test_resume_from_another_working_directory_works_from_2_1_328_on(
    tmp_path: Path, version: str, found: bool
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first, _ = _finish(_start(tmp_path / "a", "success", version=version))
    proc = _start(tmp_path / "b", "success", "--resume", str(first.session_id), version=version)
    _, elsewhere, _ = _finish(proc)
    assert elsewhere.session_id == first.session_id
    if found:
        assert elsewhere.success
    else:
        assert (elsewhere.success, elsewhere.cause) == (False, "agent_error")
        assert "No conversation found" in (elsewhere.error or "")


def test_resume_of_an_unknown_session_says_so_on_stderr_from_2_1_328_on(tmp_path: Path) -> None:
    session = "f7046f2e-8484-48a9-ba96-008da56ae506"
    proc = _start(tmp_path, "success", "--resume", session, version="2.1.328")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.decode() == f"No conversation found with session ID: {session}\n"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_prompt_marker_chooses_the_scenario_and_the_session_keeps_it(
    tmp_path: Path, version: str
) -> None:
    proc = _start(tmp_path, "success", prompt="Fix it [fake:fail_twice]", version=version)
    _, first, _ = _finish(proc)
    assert first.cause == "api_error"
    resumed = _start(tmp_path, "success", "--resume", str(first.session_id), version=version)
    _, again, _ = _finish(resumed)
    assert again.cause == "api_error"  # the resumed session keeps its scenario


@pytest.mark.parametrize("version", VERSIONS)
def test_write_and_bash_leave_their_files(tmp_path: Path, version: str) -> None:
    _finish(_start(tmp_path, "write", version=version))
    _finish(_start(tmp_path, "bash", version=version))
    assert (tmp_path / "fake.txt").exists() and (tmp_path / "bash.txt").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_sigint_while_streaming_ends_with_an_aborted_result_and_exit_0(
    tmp_path: Path, version: str
) -> None:
    proc = _start(tmp_path, "slow", version=version)
    assert proc.stdout is not None
    proc.stdout.readline()  # the init line: the answer is streaming
    proc.send_signal(signal.SIGINT)
    reader, out, _ = _finish(proc)
    assert proc.returncode == 0
    assert (out.cause, out.terminal_reason) == ("agent_error", "aborted_streaming")
    assert reader.outcome(0, cancelled=True).cause == "cancelled"  # when ClaudeDo sent it


def _tool_child(tmp_path: Path, version: str) -> tuple[subprocess.Popen[bytes], int]:
    pid_file = tmp_path / "child.pid"
    pid_file.unlink(missing_ok=True)
    env = {"FAKE_CLAUDE_CHILD_PID_FILE": str(pid_file), "FAKE_CLAUDE_CHILD_S": "60"}
    proc = _start(tmp_path, "tool_child", version=version, **env)
    wait_until(pid_file.exists, what="the tool child")
    return proc, int(pid_file.read_text())


@pytest.mark.parametrize(("version", "exit_code"), [("2.1.197", 1), ("2.1.328", 0)])
def test_sigint_kills_the_tool_child_and_ends_with_an_aborted_result(
    tmp_path: Path, version: str, exit_code: int
) -> None:
    proc, child = _tool_child(tmp_path, version)
    proc.send_signal(signal.SIGINT)
    _, out, _ = _finish(proc)
    assert proc.returncode == exit_code
    assert (out.success, out.cause, out.terminal_reason) == (False, "agent_error", "aborted_tools")
    assert _dead(child)
    assert not (tmp_path / "late.txt").exists()


@pytest.mark.parametrize(("version", "child_survives"), [("2.1.197", True), ("2.1.328", False)])
def test_sigterm_ends_without_a_result_and_kills_the_tool_child_from_2_1_328_on(
    tmp_path: Path, version: str, child_survives: bool
) -> None:
    proc, child = _tool_child(tmp_path, version)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=60)
    lines = out.splitlines()
    try:
        assert proc.returncode == 143
        assert not any(json.loads(line).get("type") == "result" for line in lines)
        assert _dead(child) is not child_survives
        if not child_survives:
            tool_result = json.loads(lines[-1])["message"]["content"][0]
            assert (tool_result["type"], tool_result["content"]) == ("tool_result", "Exit code 137")
    finally:
        if child_survives and not _dead(child):
            os.killpg(child, signal.SIGKILL)
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    assert reader.outcome(143, cancelled=True).cause == "cancelled"  # ClaudeDo sent it
    assert reader.outcome(143).cause == "no_result"  # someone else did


@pytest.mark.parametrize("version", VERSIONS)
def test_a_tool_child_outlives_a_group_kill(tmp_path: Path, version: str) -> None:
    proc, child = _tool_child(tmp_path, version)
    os.killpg(proc.pid, signal.SIGKILL)  # what killing the agent's group does
    proc.wait(10)
    try:
        assert psutil.Process(child).is_running() and not _dead(child)  # the hazard is real
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


def _dead(pid: int) -> bool:
    """Gone, or a zombie (dead, waiting to be reaped by whoever adopted it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
