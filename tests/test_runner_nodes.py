"""Running tasks across node lives: crashes, stops, several nodes, a missing agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest

from claudedo_actors.agent.follow import follow_output
from claudedo_actors.agent.run_output import END_HEADER, LINE_HEADER, PART_HEADER
from events.log import OUTPUT_STREAM
from tests.conftest import home_url, wait_until
from tests.runner_support import Runner, processes_marked


def _processes_of(task_id: str) -> list[psutil.Process]:
    """The live processes of the task's runs, as psutil handles."""
    found = []
    for pid in processes_marked(task_id):
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:  # a process of the run that ended meanwhile
            continue
    return found


def test_missing_agent_binary_fails_the_task_naming_the_setting(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, claude_bin=str(tmp_path / "no-such-claude")).start()
    try:
        runner.add_list(git_repo)
        task = runner.wait_status(runner.add_task("Anything"))
        assert (task["status"], task["cause"]) == ("failed", "spawn_failed")
        assert "no-such-claude" in task["error"] and "--claude-bin" in task["error"]
        assert task["runs"] == []
    finally:
        runner.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root only")
def test_bypass_permissions_as_root_without_is_sandbox_is_refused_before_any_run(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, env={"IS_SANDBOX": ""}).start()
    try:
        with pytest.raises(Exception, match="IS_SANDBOX=1"):
            runner.add_list(git_repo, permission_mode="bypassPermissions")
        runner.add_list(git_repo)
        with pytest.raises(Exception, match="IS_SANDBOX=1"):
            runner.add_task("Risky", permission_mode="bypassPermissions")
        assert runner.agent_calls() == []
    finally:
        runner.stop()


def test_a_run_whose_log_cannot_be_made_settles_its_task_and_frees_its_slot(
    tmp_path: Path, git_repo: Path
) -> None:
    # (A crashing Run actor: tests/faults/test_actor_crashes.py fires one at a fault point.)
    runner = Runner(tmp_path)
    (runner.node.home / "logs").parent.mkdir(parents=True)
    (runner.node.home / "logs").write_text("a file where the run logs' folder should be\n")
    runner.start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Hello")
        task = runner.wait_status(task_id)
        assert (task["status"], task["cause"]) == ("failed", "log_failed")
        assert task["error"].startswith("Cannot write the run's log")
        assert processes_marked(task_id) == []
        # The slot was freed: the next task is taken too (and fails the same way).
        assert runner.wait_status(runner.add_task("Next"))["status"] == "failed"
    finally:
        runner.stop()


def test_one_slot_runs_one_task_at_a_time(tmp_path: Path, git_repo: Path) -> None:
    runner = Runner(tmp_path, slots=1).start()
    try:
        runner.add_list(git_repo)
        first = runner.add_task("Slow [fake:slow]")
        runner.wait_run(first)
        second = runner.add_task("Waits")
        assert runner.task(second)["status"] == "queued"
        runner.ask("task.cancel", tasks=[first])
        assert runner.wait_status(second)["status"] == "done"
    finally:
        runner.stop()


def test_a_node_killed_mid_run_settles_the_orphan_on_start_and_resumes_it(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, env={"FAKE_CLAUDE_SLOW_S": "2"}).start()
    runner.add_list(git_repo)
    task_id = runner.add_task("Slow [fake:slow]")
    runner.wait_run(task_id)
    orphans = _processes_of(task_id)
    assert orphans
    runner.node.kill9()  # its agent gets SIGTERM from the kernel (tests/faults: and if not)
    runner.start()
    task = runner.wait_status(task_id)
    assert task["status"] == "done"
    assert not any(p.is_running() for p in orphans)
    run1, run2 = runner.ask("runs", task=task_id)
    assert (run1["cause"], run1["success"]) == ("worker_lost", False)
    assert run2["is_retry"] and run2["resume_session_id"] == run1["session_id"]
    events = runner.events(task_id)
    assert "TaskRequeued" in events and events.count("TaskClaimed") == 2
    runner.stop()


def test_a_node_stopped_mid_run_gives_the_task_back_and_finishes_it_later(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, env={"FAKE_CLAUDE_SLOW_S": "2"}).start()
    runner.add_list(git_repo)
    task_id = runner.add_task("Slow [fake:slow]")
    runner.wait_run(task_id)
    assert runner.node.stop() == 0
    assert processes_marked(task_id) == []
    runner.start()
    task = runner.wait_status(task_id)
    assert task["status"] == "done"
    run1, run2 = runner.ask("runs", task=task_id)
    assert run1["cause"] == "worker_lost" and run2["is_retry"]
    # The interrupted run's live output was closed too: a follower is not left waiting.
    url = home_url(runner.node.home)
    lines: list[bytes] = []
    assert asyncio.run(follow_output(url, task_id, 1, lines.append, idle_timeout_s=10))
    assert len(lines) == run1["line_count"] > 0
    runner.stop()


def test_a_node_stopped_during_the_retry_fails_the_task_as_a_dead_node_would(
    tmp_path: Path, git_repo: Path
) -> None:
    # Decision 0006: a lost run is retried once; when the lost run was that retry, the task
    # fails with worker_lost, whether its node stopped cleanly or died.
    runner = Runner(tmp_path, env={"FAKE_CLAUDE_SLOW_S": "2"}).start()
    runner.add_list(git_repo)
    task_id = runner.add_task("Fails then slow [fake:fail_then_slow]")
    runner.wait_run(task_id, run_number=2)
    assert runner.node.stop() == 0
    runner.start()
    task = runner.ask("task.show", task=task_id)
    assert (task["status"], task["cause"]) == ("failed", "worker_lost")
    runs = runner.ask("runs", task=task_id)
    assert [(r["is_retry"], r["cause"]) for r in runs] == [
        (False, "api_error"),
        (True, "worker_lost"),
    ]
    assert "TaskRequeued" not in runner.events(task_id)
    runner.stop()


def test_the_retry_of_a_lost_run_gets_what_it_left_of_the_limits(
    tmp_path: Path, git_repo: Path
) -> None:
    # Stopped, the slow run ends like the slow_int transcript: 2 turns. With a limit of 2
    # turns nothing is left for the retry of the lost run (decision 0012): the task fails.
    runner = Runner(tmp_path, env={"FAKE_CLAUDE_SLOW_S": "2"}).start()
    runner.add_list(git_repo)
    task_id = runner.add_task("Slow [fake:slow]", max_turns=2)
    runner.wait_run(task_id)
    assert runner.node.stop() == 0
    runner.start()
    task = runner.wait_status(task_id)
    assert (task["status"], task["cause"]) == ("failed", "worker_lost")
    (run,) = runner.ask("runs", task=task_id)
    assert (run["turn_count"], run["cause"]) == (2, "worker_lost")
    runner.stop()


def test_two_nodes_on_one_nats_never_run_a_task_twice(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    a = Runner(tmp_path, slots=3, name="a", extra=["--nats", nats_url]).start()
    b = Runner(tmp_path, slots=3, name="b", extra=["--nats", nats_url]).start()
    try:
        list_name = f"shared-{os.getpid()}-{id(a)}"
        a.add_list(git_repo, list_name)
        ids = [a.add_task(f"Task {i}", list_name) for i in range(24)]
        for task_id in ids:
            a.wait_status(task_id)
        for task_id in ids:
            events = a.events(task_id)
            assert events.count("TaskClaimed") == 1 and events.count("RunStarted") == 1
            assert a.task(task_id)["status"] == "done"
        nodes = {a.task(i)["runs"][0]["node_id"] for i in ids}
        assert len(a.agent_calls()) + len(b.agent_calls()) == len(ids)
        assert len(nodes) >= 1
    finally:
        a.stop()
        b.stop()


def test_output_lines_are_published_live_and_big_ones_split(tmp_path: Path, git_repo: Path) -> None:
    runner = Runner(tmp_path).start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Big [fake:big_line]")
        runner.wait_status(task_id)
        run = runner.ask("runs", task=task_id)[0]
        url = home_url(runner.node.home)
        lines = asyncio.run(_read_output(url, f"claudedo.out.{task_id}.1"))
        assert b"\n".join(lines) + b"\n" == Path(run["log_path"]).read_bytes()
    finally:
        runner.stop()


async def _read_output(url: str, subject: str) -> list[bytes]:
    """Reassemble a run's lines from the output stream, up to the end marker."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.subscribe(subject, stream=OUTPUT_STREAM, ordered_consumer=True)
    lines: list[bytes] = []
    parts: list[bytes] = []
    split_seen = False
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            headers = msg.headers or {}
            if END_HEADER in headers:
                assert int(headers[END_HEADER]) == len(lines)
                break
            assert int(headers[LINE_HEADER]) == len(lines) + 1
            if PART_HEADER in headers:
                split_seen = True
                index, total = map(int, headers[PART_HEADER].split("/"))
                parts.append(msg.data)
                if index == total:
                    lines.append(b"".join(parts))
                    parts = []
            else:
                lines.append(msg.data)
    finally:
        await nc.close()
    assert split_seen
    return lines


# Beats every 0.4 s: a node missing 5 in a row (2 s) is lost.
_FAST_BEATS = {"CLAUDEDO_HEARTBEAT_S": "0.4"}


def _node_id(runner: Runner) -> str:
    # Not `info`: on a shared NATS any node may answer an API request.
    return str(json.loads((runner.node.home / "node.json").read_text())["node_id"])


def _wait_listening(runner: Runner) -> None:
    """Until the node has listened to heartbeats for a whole lease (it says so in its log)."""
    wait_until(
        lambda: "listening to" in runner.node.log_path.read_text(),
        what=f"node {runner.node.home.name} to listen to heartbeats",
    )


def _lost_sessions(runner: Runner, task_id: str) -> list[dict[str, Any]]:
    return [e for e in runner.ask("audit", task=task_id) if e["type"] == "SessionLost"]


def _slow_task_on_a(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> tuple[Runner, Runner, str, dict[str, Any]]:
    """Nodes a (running a slow task, its run 1 started) and b (not started yet), on one NATS."""
    shared = ["--nats", nats_url]
    a = Runner(tmp_path, 1, name="a", env={**_FAST_BEATS, "FAKE_CLAUDE_SLOW_S": "60"}, extra=shared)
    b = Runner(tmp_path, 1, name="b", env={**_FAST_BEATS, "FAKE_CLAUDE_SLOW_S": "1"}, extra=shared)
    a.start()
    try:
        list_name = f"slow-{os.getpid()}-{id(a)}"
        a.add_list(git_repo, list_name)
        task_id = a.add_task("Slow [fake:slow]", list_name)
        return a, b, task_id, a.wait_run(task_id)
    except BaseException:
        a.stop()
        raise


def test_a_lost_nodes_task_is_settled_by_another_node_and_retried_in_a_fresh_session(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    a, b, task_id, run1 = _slow_task_on_a(tmp_path, git_repo, nats_url)
    try:
        orphans = _processes_of(task_id)
        assert orphans
        a_id = _node_id(a)
        b.start()
        _wait_listening(b)  # b hears a's beats: a is alive, its task is left alone
        a.node.kill9()  # its agent lives on, and no beat says that a is gone
        task = b.wait_status(task_id)
        assert task["status"] == "done"
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
        lost, retry = b.ask("runs", task=task_id)
        assert (lost["cause"], lost["node_id"]) == ("worker_lost", a_id)
        assert a_id in lost["error"] and "heartbeat" in lost["error"]
        assert retry["is_retry"] and retry["node_id"] == _node_id(b)
        assert retry["resume_session_id"] is None  # a's session stays with a
        (event,) = _lost_sessions(b, task_id)
        assert event["payload"]["node_id"] == a_id
        (call,) = b.agent_calls()
        assert "--resume" not in call["argv"]
        assert (
            call["prompt"].startswith("Slow [fake:slow]") and "cannot be resumed" in call["prompt"]
        )
        assert run1["session_id"] != retry["session_id"]
    finally:
        b.stop()
        a.stop()


def test_a_continue_stays_with_the_node_keeping_its_session_then_starts_fresh_without_it(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    shared = ["--nats", nats_url]
    # a's continue runs for 5 s, several leases: b must hear a all along and leave it alone.
    a_env = {**_FAST_BEATS, "FAKE_CLAUDE_SLOW_S": "5"}
    a = Runner(tmp_path, 1, name="a", env=a_env, extra=shared).start()
    b = Runner(tmp_path, 2, name="b", env=_FAST_BEATS, extra=shared)
    try:
        list_name = f"keep-{os.getpid()}-{id(a)}"
        a.add_list(git_repo, list_name)
        task_id = a.add_task("Hello", list_name)
        first = a.wait_status(task_id)["runs"][0]
        a_id = _node_id(a)
        b.start()  # free slots, but the session of the task is kept by a
        _wait_listening(b)
        b.ask("task.continue", task=task_id, prompt="And now the tests [fake:slow]")
        task = b.wait_status(task_id)
        assert task["status"] == "done"
        second = task["runs"][1]
        assert second["node_id"] == first["node_id"] == a_id
        assert second["resume_session_id"] == first["session_id"]
        assert b.agent_calls() == []
        assert _lost_sessions(b, task_id) == []
        events = b.events(task_id)
        assert "TaskRequeued" not in events and events.count("TaskClaimed") == 2

        assert a.node.stop() == 0  # a clean stop removes a's entry at once
        b.ask("task.continue", task=task_id, prompt="And now the docs")
        task = b.wait_status(task_id)
        assert task["status"] == "done"
        third = task["runs"][2]
        assert third["is_continue"] and third["node_id"] == _node_id(b)
        assert third["resume_session_id"] is None
        (event,) = _lost_sessions(b, task_id)
        assert event["payload"]["node_id"] == a_id
        assert event["payload"]["session_id"] == second["session_id"]
        (call,) = b.agent_calls()
        assert "--resume" not in call["argv"]
        assert call["prompt"].startswith("Hello") and call["prompt"].endswith("And now the docs")
        assert second["result"] in call["prompt"]
    finally:
        b.stop()
        a.stop()


def test_a_node_cut_off_while_its_task_moved_writes_nothing_more_to_it(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    a, b, task_id, _ = _slow_task_on_a(tmp_path, git_repo, nats_url)
    try:
        a_id = _node_id(a)
        b.start()
        _wait_listening(b)
        assert a.node.proc is not None
        os.kill(a.node.proc.pid, signal.SIGSTOP)  # a stops beating, as if cut off
        try:
            # No API request meanwhile: the frozen node is a member of the API's queue group.
            wait_until(b.agent_calls, what="node b to run the task again")
        finally:
            os.kill(a.node.proc.pid, signal.SIGCONT)
        assert b.wait_status(task_id)["status"] == "done"
        # a wakes up with a run whose task moved on: its next append is refused, and it stops.
        wait_until(
            lambda: "no longer held by this node" in a.node.log_path.read_text(),
            what="node a to find its task gone",
        )
        audit = b.ask("audit", task=task_id)
        requeued = next(e["seq"] for e in audit if e["type"] == "TaskRequeued")
        assert all(e["seq"] < requeued for e in audit if e["node"] == a_id)
        assert b.task(task_id)["status"] == "done"
        assert processes_marked(task_id) == []
        assert a.node.stop() == 0
    finally:
        b.stop()
        a.stop()
