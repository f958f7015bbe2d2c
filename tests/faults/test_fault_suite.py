"""The fault suite: seeded, repeatable scenarios of real faults, each checked against every
invariant (tests/faults/invariants.py). The short form runs by default; the long form is
`-m slow` (ops/faults/run). Each scenario prints its counts: kills, runs, events, violations.

(a) kill -9 of the node at random moments during fake-agent runs, restarting each time
(b) the nats-server paused (SIGSTOP 3 s) and killed -9 under load, then restarted
(c) two nodes on one NATS racing for instant tasks
(d) discard / requeue / continue / cancel / merge interleavings from several clients
"""

from __future__ import annotations

import json
import random
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from claudedo_actors.node.embedded_nats import EmbeddedNats
from claudedo_actors.node.roles import HomeCredentials
from events.errors import ClaudeDoError
from tests.conftest import _git, login_url, wait_until
from tests.faults.invariants import Report, check, last_seq
from tests.runner_support import TERMINAL, Runner

SCENARIOS = ["success", "write", "fail_then_succeed", "fail_twice", "slow", "write_then_fail"]


class RoledNats(EmbeddedNats):
    """A nats-server with ClaudeDo's roles on, as a shared server would have them: `creds`
    holds each role's credentials, `login` is its URL logged in as the node."""

    def __init__(self, folder: Path) -> None:
        self.creds = folder / "creds"
        credentials = HomeCredentials(self.creds)
        config = folder / "nats" / "auth.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(credentials.server_config())
        self._node = credentials.get("node")
        super().__init__(folder / "nats", folder / "nats" / "pid", "faults", config=config)

    @property
    def login(self) -> str:
        return login_url(self.url, self._node.user, self._node.password)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[RoledNats]:
    """A nats-server of this scenario alone (its log holds nothing else), roles on: every
    scenario runs under the roles, its nodes and clients logged in as theirs."""
    server = RoledNats(tmp_path)
    server.start()
    yield server
    server.stop()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("faults\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


def _node_id(runner: Runner) -> str:
    return str(json.loads((runner.node.home / "node.json").read_text())["node_id"])


def _add(runner: Runner, rng: random.Random, list_name: str, acked: set[str], i: int) -> None:
    title = f"t{i} [fake:{rng.choice(SCENARIOS)}]"
    try:
        runner.add_task(title, list_name)
        acked.add(title)
    except ClaudeDoError:
        pass  # the node went down mid-request: not acknowledged


def _settle_all(runner: Runner, timeout_s: float = 180) -> None:
    """Wait until no task of the node is queued or unsettled."""

    def settled() -> bool:
        try:
            rows = runner.ask("tasks")
        except ClaudeDoError:
            return False  # the node is reconnecting, or still starting
        return all(r["status"] in (*TERMINAL, "draft") for r in rows)

    wait_until(settled, timeout_s, "every task to be settled")


def _finish(report: Report, runners: list[Runner], url: str, repos: list[Path],
            acked: set[str] | None, root: Path) -> None:  # fmt: skip
    ids = [_node_id(r) for r in runners]
    for r in runners:
        r.stop()
    check(report, url, runners[0].node.home / "projection.duckdb", repos, ids, acked, root)
    print(report.line())
    for line in report.violations:
        print("  " + line)
    assert report.violations == []


@pytest.mark.parametrize(
    "kills", [6, pytest.param(120, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_a_kill_9_of_the_node_at_random_moments(
    tmp_path: Path, own_nats: RoledNats, kills: int
) -> None:
    rng = random.Random(kills)
    repo = _repo(tmp_path)
    runner = Runner(tmp_path, slots=2, env={"FAKE_CLAUDE_SLOW_S": "1"},
                    extra=["--nats", own_nats.url], creds=own_nats.creds).start()  # fmt: skip
    report = Report(f"kill -9 x{kills}")
    acked: set[str] = set()
    runner.add_list(repo, "chaos")
    for k in range(kills):
        for _ in range(rng.randint(1, 3)):
            _add(runner, rng, "chaos", acked, len(acked) + k * 10)
        # A random moment: once the log grew by a random number of events.
        target = last_seq(own_nats.login) + rng.randint(1, 12)
        wait_until(lambda t=target: last_seq(own_nats.login) >= t, 60, "the log to grow")
        runner.node.kill9()
        report.counts["kills"] += 1
        runner.node.start()
    _settle_all(runner)
    _finish(report, [runner], own_nats.login, [repo], acked, tmp_path)


@pytest.mark.parametrize(
    "rounds", [1, pytest.param(5, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_nats_paused_and_killed_under_load(
    tmp_path: Path, own_nats: RoledNats, rounds: int
) -> None:
    rng = random.Random(rounds)
    repo = _repo(tmp_path)
    runner = Runner(tmp_path, slots=2, env={"FAKE_CLAUDE_SLOW_S": "2"},
                    extra=["--nats", own_nats.url], creds=own_nats.creds).start()  # fmt: skip
    report = Report(f"nats paused and killed x{rounds}")
    acked: set[str] = set()
    runner.add_list(repo, "load")
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            _add(runner, rng, "load", acked, i)
            stop.wait(0.2)  # the load's pace, not a synchronisation

    traffic = threading.Thread(target=load, daemon=True)
    traffic.start()
    try:
        for _ in range(rounds):
            wait_until(lambda: len(acked) >= 4 + report.counts["pauses"] * 4, 60, "load")
            server = psutil.Process(own_nats.proc.pid)  # type: ignore[union-attr]
            server.suspend()
            report.counts["pauses"] += 1
            stop.wait(3.0)  # the fault: a server that answers nothing for 3 s
            server.resume()
            wait_until(lambda: len(acked) >= 8 + report.counts["pauses"] * 4, 60, "load")
            own_nats.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            own_nats.proc.wait()  # type: ignore[union-attr]
            report.counts["nats kills"] += 1
            own_nats._spawn(own_nats.port, 20.0)  # the same port and store
    finally:
        stop.set()
        traffic.join(30)
    _settle_all(runner)
    _finish(report, [runner], own_nats.login, [repo], acked, tmp_path)


@pytest.mark.parametrize(
    "tasks", [120, pytest.param(1000, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_two_nodes_race_for_instant_tasks(tmp_path: Path, own_nats: RoledNats, tasks: int) -> None:
    repo = _repo(tmp_path)
    shared = ["--nats", own_nats.url]
    a = Runner(tmp_path, slots=3, name="a", extra=shared, creds=own_nats.creds).start()
    b = Runner(tmp_path, slots=3, name="b", extra=shared, creds=own_nats.creds).start()
    report = Report(f"two nodes, {tasks} tasks")
    a.add_list(repo, "race")
    acked: set[str] = set()
    for i in range(tasks):
        title = f"instant {i}"
        (a if i % 2 else b).add_task(title, "race")
        acked.add(title)
    _settle_all(a, timeout_s=600)
    rows = a.ask("tasks")
    done = [r for r in rows if r["status"] == "done"]
    report.counts["done"] = len(done)
    for row in rows:
        if row["status"] != "done":
            task = a.task(row["id"])
            report.violations.append(
                f"task {row['id'][:8]} ended {task['status']}: {task['cause']} {task['error']}"
            )
    calls = len(a.agent_calls()) + len(b.agent_calls())
    if calls != tasks:
        report.violations.append(f"{calls} agent runs for {tasks} tasks")
    _finish(report, [a, b], own_nats.login, [repo], acked, tmp_path)


@pytest.mark.parametrize(
    "ops", [40, pytest.param(400, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_review_and_queue_interleavings(tmp_path: Path, own_nats: RoledNats, ops: int) -> None:
    rng = random.Random(ops)
    repo = _repo(tmp_path)
    runner = Runner(tmp_path, slots=3, env={"FAKE_CLAUDE_SLOW_S": "1"},
                    extra=["--nats", own_nats.url], creds=own_nats.creds).start()  # fmt: skip
    report = Report(f"review interleavings x{ops}")
    runner.add_list(repo, "review")
    ids = [runner.add_task(f"Work {i} [fake:write]", "review") for i in range(6)]
    _settle_all(runner)  # every task has a worktree to review before the clients begin
    verbs = ["task.queue", "task.continue", "task.cancel", "worktree.discard", "worktree.merge"]
    lock = threading.Lock()

    def client(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(ops // 4):
            verb, task_id = r.choice(verbs), r.choice(ids)
            payload: dict[str, object] = {"task": task_id}
            if verb in ("task.queue", "task.cancel"):
                payload = {"tasks": [task_id]}
            if verb == "task.continue":
                payload["prompt"] = f"more {uuid.uuid4().hex[:6]} [fake:{r.choice(SCENARIOS)}]"
            try:
                runner.ask(verb, **payload)
                outcome = "ok"
            except ClaudeDoError as exc:
                outcome = exc.code  # refused: a clear error, nothing changed
            with lock:
                report.counts[f"{verb} {outcome}"] += 1

    threads = [threading.Thread(target=client, args=(rng.random(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    _settle_all(runner)
    _finish(report, [runner], own_nats.login, [repo], None, tmp_path)
