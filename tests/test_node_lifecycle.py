"""The node's life: clean stop, one node per home, stable id, restarts after kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import events as ev
from claudedo_actors.node.embedded_nats import find_nats_server, free_port
from events.log import EventLog
from projections import Projection
from tests.conftest import JetStreamEnv, NodeProcess, wait_until


def _nats_pid(node: NodeProcess) -> int:
    return int((node.home / "nats" / "nats-server.pid").read_text())


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigterm_stops_the_node_and_its_nats_server(node: NodeProcess) -> None:
    nats_pid = _nats_pid(node)
    assert psutil.pid_exists(nats_pid)
    assert node.stop() == 0
    wait_until(lambda: _gone(nats_pid), what="nats-server to exit")
    assert not (node.home / "node.json").exists()
    log = node.log_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_a_second_node_on_the_same_home_is_refused(node: NodeProcess) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "up"],
        env=node.env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1
    assert (
        second.stderr
        == f"error: a node is already running on home {node.home} (pid {node.proc.pid})\n"
    )  # type: ignore[union-attr]
    assert node.ok("info")["node_id"]  # the first one is unharmed


def test_the_node_id_is_stable_per_home(node: NodeProcess, git_repo: Path) -> None:
    first = node.ok("info")["node_id"]
    node.ok("list", "add", "demo", "--dir", str(git_repo))
    node.stop()
    node.start()
    assert node.ok("info")["node_id"] == first
    assert [r["name"] for r in node.ok("list", "ls")] == ["demo"]


def test_a_home_whose_log_is_in_the_global_account_keeps_it(
    node: NodeProcess, git_repo: Path
) -> None:
    """Homes made before the nodes had a NATS account of their own (decision 0022) kept the
    log in the server's global account, `$G`; the node moves it into its account."""
    node.ok("list", "add", "demo", "--dir", str(git_repo))
    last = node.ok("info")["last_seq"]
    node.stop()
    jetstream = node.home / "nats" / "jetstream"
    (jetstream / "CLAUDEDO").rename(jetstream / "$G")
    node.start()
    assert [r["name"] for r in node.ok("list", "ls")] == ["demo"]
    assert node.ok("info")["last_seq"] == last
    assert not (jetstream / "$G").exists()


def test_after_kill_9_the_node_restarts_with_nothing_lost(
    node: NodeProcess, git_repo: Path
) -> None:
    node.ok("list", "add", "demo", "--dir", str(git_repo))
    ids = [node.ok("task", "add", "demo", f"T{i}", "--queue")["id"] for i in range(3)]
    nats_pid = _nats_pid(node)
    node.kill9()
    node.start()
    wait_until(lambda: _gone(nats_pid), what="the old nats-server to be gone")
    assert {r["id"] for r in node.ok("tasks", "--status", "queued")} == set(ids)
    info = node.ok("info")
    assert info["last_seq"] == info["checkpoint_seq"] == 7


def test_a_leftover_nats_server_on_the_store_never_blocks_the_start(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home")
    store = node.home / "nats"
    store.mkdir(parents=True)
    pid_file = store / "nats-server.pid"
    # A server a crashed node left behind (its parent-death signal never came, e.g. on macOS).
    leftover = subprocess.Popen(
        [
            find_nats_server(),
            "--jetstream",
            "--store_dir",
            str(store),
            "--addr",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--pid",
            str(pid_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(pid_file.exists, what="leftover pid file")
    try:
        node.start()
        assert leftover.wait(20) is not None
        assert node.ok("info")["node_id"]
    finally:
        if leftover.poll() is None:
            leftover.kill()
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def _load_tasks(jsenv: JetStreamEnv, n: int) -> int:
    """A list and `n` queued tasks in the log, as another node would have written them."""
    log = EventLog(jsenv.js)
    jsenv.run(log.ensure_stream())
    origin = ev.Origin(node_id="loader", correlation_id="bulk", actor="user:test")

    async def load() -> int:
        futs = []
        futs.append(await jsenv.js.publish_async(*_pub(ev.ListCreated(name="bulk"), "l1", origin)))
        for i in range(n):
            t = f"task-{i:05d}"
            futs.append(
                await jsenv.js.publish_async(
                    *_pub(ev.TaskCreated(list_id="l1", title=f"T{i}"), t, origin)
                )
            )
            futs.append(await jsenv.js.publish_async(*_pub(ev.TaskQueued(), t, origin)))
        await asyncio.gather(*futs)
        return await log.last_seq()

    return jsenv.run(load())


def _assert_holds_the_log(node: NodeProcess, last: int, tasks: int) -> None:
    """The projection holds every message of the log once: the `last` the test wrote, and
    the node's signed checkpoints of them after (decision 0023)."""
    now = node.ok("info")["last_seq"]
    counts = node.ok(
        "sql",
        "select count(*) as n, count(distinct seq) as d, max(seq) as m,"
        " count(*) filter (where aggregate <> 'log') as ours from events",
    )
    assert counts == [{"n": now, "d": now, "m": now, "ours": last}]
    assert node.ok("sql", "select status, count(*) as n from tasks group by 1") == [
        {"status": "queued", "n": tasks}
    ]


def _checkpoint(node: NodeProcess) -> int:
    return int(json.loads(node.cli("info", "--json").out)["checkpoint_seq"])


def _caught_up(node: NodeProcess, last: int) -> bool:
    """The projection reached the log's end, at or past `last` (the node may have appended
    a checkpoint of the log meanwhile)."""
    info = node.ok("info")
    return bool(info["checkpoint_seq"] >= last and info["checkpoint_seq"] == info["last_seq"])


def test_kill_9_during_catch_up_applies_no_event_twice_and_misses_none(
    tmp_path: Path, jsenv: JetStreamEnv
) -> None:
    # The node's projection holds the first event; 6,000 tasks' events follow in the log. The
    # node is killed once its projector has started applying them, then restarted.
    last = _load_tasks(jsenv, 6000)
    home = tmp_path / "home"
    home.mkdir()
    behind = Projection(home / "projection.duckdb")
    behind.apply(jsenv.run(EventLog(jsenv.js).read_all(1, 1)))
    behind.close()
    node = NodeProcess(home, ["--nats", jsenv.url])
    node.start()
    wait_until(lambda: _checkpoint(node) > 1, what="projector to start applying")
    node.kill9()
    node.start()
    wait_until(lambda: _caught_up(node, last), 60, "projector to catch up")
    # Stopped right after a bulk catch-up, the node still shuts down cleanly.
    _assert_holds_the_log(node, last, 6000)
    assert node.stop() == 0
    assert "Traceback" not in node.log_path.read_text()


def test_an_empty_projection_is_built_in_bulk_mode_over_a_half_built_file(
    tmp_path: Path, jsenv: JetStreamEnv
) -> None:
    # A new node on a long log builds its projection in bulk mode and swaps it in. A node
    # killed while building left a half-built file: it is thrown away, not trusted.
    last = _load_tasks(jsenv, 3000)
    home = tmp_path / "home"
    home.mkdir()
    (home / "projection.build.duckdb").write_bytes(b"half-built by a node killed while building")
    node = NodeProcess(home, ["--nats", jsenv.url])
    node.start()
    wait_until(lambda: _caught_up(node, last), 60, "projection to be built")
    assert f"projection empty, log at {last}: catching up in bulk mode" in node.log_path.read_text()
    _assert_holds_the_log(node, last, 3000)
    assert not (home / "projection.build.duckdb").exists()  # swapped in
    assert node.stop() == 0
    assert "Traceback" not in node.log_path.read_text()


def _pub(event: ev.Event, aggregate_id: str, origin: ev.Origin) -> tuple[str, bytes]:
    env = ev.envelop(event, aggregate_id, origin)
    return env.subject, ev.encode(env)


def test_no_process_of_the_node_survives_it(node: NodeProcess) -> None:
    assert node.proc is not None
    children = psutil.Process(node.proc.pid).children(recursive=True)
    assert children, "the embedded nats-server is a child of the node"
    node.stop()
    for child in children:
        wait_until(lambda c=child: _gone(c.pid), what=f"child {child.pid} to exit")
    assert os.environ.get("CLAUDEDO_HOME") != str(node.home)


def _up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`claudedo up ARGS` on a fresh home, run to its end."""
    node = NodeProcess(tmp_path / "home")
    node.home.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "up", *args],
        env=node.env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_an_unreachable_nats_server_is_a_clear_error(tmp_path: Path) -> None:
    result = _up(tmp_path, "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to NATS at nats://127.0.0.1:")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "node.json").exists()


def test_sigterm_while_starting_aborts_the_start(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home")
    node.home.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "claudedo_actors",
            "up",
            "--nats",
            f"nats://127.0.0.1:{free_port()}",
        ],
        env={**node.env(), "CLAUDEDO_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    # The node logs its first connection failure; then it is waiting for NATS.
    for line in proc.stdout:
        if "retrying" in line:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 1
    assert "interrupted while starting" in proc.stdout.read()


@pytest.mark.parametrize("url", ["garbage://::", "nats://", "nats://host:notaport"])
def test_a_malformed_nats_url_is_refused_at_once(tmp_path: Path, url: str) -> None:
    result = _up(tmp_path, "--nats", url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_a_bad_heartbeat_setting_is_refused_at_once(tmp_path: Path, value: str) -> None:
    node = NodeProcess(tmp_path / "home")
    node.home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "up"],
        env={**node.env(), "CLAUDEDO_HEARTBEAT_S": value},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.startswith("error: CLAUDEDO_HEARTBEAT_S must be")
    assert result.stderr.count("\n") == 1


def test_a_stopped_bridge_leaves_no_task_pending(jsenv: JetStreamEnv) -> None:
    # A JetStream subscription runs heartbeat and flow-control tasks that a drain leaves
    # running; a loop stopped with them pending logs "Task was destroyed but it is pending".
    from claudedo_actors.node.bridge import NatsBridge
    from claudedo_actors.node.log_facade import LogFacade

    jsenv.run(EventLog(jsenv.js).ensure_stream())
    bridge = NatsBridge()
    bridge.start(jsenv.url, "test")
    LogFacade(bridge).watch("claudedo.evt.>", lambda subject, seq: None)
    bridge.stop()
    assert not bridge._thread.is_alive()
    assert not [t for t in asyncio.all_tasks(bridge.loop) if not t.done()]
