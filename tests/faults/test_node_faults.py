"""The node under faults: killed with runs in flight, its agents, and readers of their output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import psutil

import events as ev
from events.log import EventLog
from tests.conftest import wait_until
from tests.runner_support import Runner


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _node_id(runner: Runner) -> str:
    return str(json.loads((runner.node.home / "node.json").read_text())["node_id"])


def test_an_agent_does_not_outlive_its_killed_node(tmp_path: Path, git_repo: Path) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SLOW_S": "120"}).start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Slow [fake:slow]")
        pid = runner.wait_run(task_id)["pid"]
        assert _alive(pid)
        runner.node.kill9()
        # Nobody restarts the node: the kernel's death signal ends the agent.
        wait_until(lambda: not _alive(pid), 20, "the agent of the killed node to end")
    finally:
        runner.stop()


def test_log_follow_ends_when_recovery_settles_the_run(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    runner = Runner(
        tmp_path, slots=1, env={"FAKE_CLAUDE_SLOW_S": "120"}, extra=["--nats", nats_url]
    ).start()
    try:
        name = f"follow-{uuid.uuid4().hex[:8]}"
        runner.add_list(git_repo, name)
        task_id = runner.add_task("Slow [fake:slow]", name)
        runner.wait_run(task_id)
        follow = subprocess.Popen(
            [sys.executable, "-m", "claudedo_actors", "log", task_id, "--follow"],
            env=runner.node.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert follow.stdout is not None
        assert json.loads(follow.stdout.readline())["subtype"] == "init"
        runner.node.kill9()  # no end marker is ever published for this run
        runner.node.start()  # recovery finishes the run as worker_lost
        _out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        run = runner.task(task_id)["runs"][0]
        assert run["cause"] == "worker_lost"
        # Settled before the node stops: the shared server's log must hold no queued task for
        # the nodes of later tests to run.
        runner.ask("task.cancel", tasks=[task_id])
        assert runner.wait_status(task_id)["status"] == "cancelled"
    finally:
        runner.stop()


def test_a_node_kills_its_orphaned_agents_at_start_even_after_others_settled_their_task(
    tmp_path: Path, git_repo: Path, nats_url: str
) -> None:
    runner = Runner(tmp_path, slots=1, extra=["--nats", nats_url]).start()
    try:
        name = f"orphan-{uuid.uuid4().hex[:8]}"
        runner.add_list(git_repo, name)
        # An agent that ignores SIGINT and SIGTERM: the death signal does not end it.
        task_id = runner.add_task("Hang [fake:hang]", name)
        pid = runner.wait_run(task_id)["pid"]
        runner.node.kill9()
        assert _alive(pid)
        # Another node (on another machine) settles the task meanwhile, as recovery does.
        asyncio.run(_settle_elsewhere(nats_url, task_id))
        runner.node.start()
        wait_until(lambda: not _alive(pid), 30, "the node's own orphan to be killed")
        assert runner.task(task_id)["status"] == "failed"  # as the other node settled it
    finally:
        runner.stop()


async def _settle_elsewhere(url: str, task_id: str) -> None:
    nc = await nats.connect(url)
    try:
        log = EventLog(nc.jetstream())
        origin = ev.Origin(node_id="elsewhere", correlation_id="c", actor="node:elsewhere")
        events = [
            ev.RunFinished(run_number=1, success=False, cause="worker_lost", error="lost"),
            ev.TaskFailed(error="lost", cause="worker_lost"),
        ]
        await log.append([ev.envelop(e, task_id, origin) for e in events], None)
    finally:
        await nc.close()


def test_the_node_process_carries_no_run_mark() -> None:
    assert not any(k in os.environ for k in ("CLAUDEDO_RUN_ID", "CLAUDEDO_NODE_ID"))


def _nats_pid(runner: Runner) -> int:
    return int((runner.node.home / "nats" / "nats-server.pid").read_text().strip())


def test_embedded_nats_killed_is_started_again_and_running_tasks_finish(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, slots=2, env={"FAKE_CLAUDE_SLOW_S": "6"}).start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Slow [fake:slow]")
        runner.wait_run(task_id)
        first = _nats_pid(runner)
        os.kill(first, signal.SIGKILL)
        info = wait_until(
            lambda: _info_or_none(runner), 30, "the node to answer again after its NATS died"
        )
        assert info["nats_connected"] and info["nats_restarts"] == 1
        assert _nats_pid(runner) != first
        task = runner.wait_status(task_id)
        assert task["status"] == "done" and task["run_count"] == 1
        assert runner.wait_status(runner.add_task("After [fake:success]"))["status"] == "done"
    finally:
        runner.stop()


def test_a_paused_nats_server_kills_no_healthy_run(tmp_path: Path, git_repo: Path) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SLOW_S": "5"}).start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Slow [fake:slow]")
        runner.wait_run(task_id)
        server = psutil.Process(_nats_pid(runner))
        server.suspend()
        try:
            # The run goes on meanwhile: it ends while the server cannot answer, and its
            # RunFinished and TaskCompleted wait for the server.
            agents = [psutil.Process(pid) for pid in _agent_pids(runner)]
            _gone, alive = psutil.wait_procs(agents, timeout=30)
            assert not alive
        finally:
            server.resume()
        task = runner.wait_status(task_id)
        assert task["status"] == "done" and task["run_count"] == 1
        assert task["runs"][0]["cause"] is None
    finally:
        runner.stop()


def _agent_pids(runner: Runner) -> list[int]:
    return [c["pid"] for c in runner.agent_calls() if _alive(c["pid"])]


def _info_or_none(runner: Runner) -> dict | None:  # type: ignore[type-arg]
    try:
        info: dict = runner.ask("info")  # type: ignore[type-arg]
    except Exception:
        return None
    return info if info.get("nats_connected") else None


def test_a_runs_end_spooled_while_nats_was_away_survives_a_kill_9(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SLOW_S": "3"}).start()
    try:
        runner.add_list(git_repo)
        task_id = runner.add_task("Write slowly [fake:slow]")
        runner.wait_run(task_id)
        server = psutil.Process(_nats_pid(runner))
        server.suspend()
        spool = runner.node.home / "spool"
        try:
            wait_until(lambda: list(spool.glob("*.json")), 60, "the run's end to be spooled")
            (kept,) = spool.glob("*.json")
            runner.node.kill9()
        finally:
            server.resume()
        runner.node.start()
        task = runner.wait_status(task_id)
        assert task["status"] == "done" and task["run_count"] == 1
        assert task["runs"][0]["success"] is True
        finished = [e for e in runner.ask("audit", task=task_id) if e["type"] == "RunFinished"]
        assert [e["event_id"] for e in finished] == [kept.stem]  # the spooled event, once
        assert not list(spool.glob("*.json"))
    finally:
        runner.stop()
