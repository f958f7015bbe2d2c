"""Fault injection: kill -9 the node again and again under command traffic; nothing is lost."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from claudedo_actors.cli.client import NodeClient
from events.errors import ClaudeDoError
from tests.conftest import NodeProcess, wait_until


class Traffic:
    """Adds tasks as fast as the node answers; remembers which adds were acknowledged."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.acked: set[str] = set()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            title = f"task {self.sent}"
            self.sent += 1
            try:
                NodeClient(self.home, timeout_s=10).request(
                    "task.add", {"list": "chaos", "title": title, "queue": True}
                )
                self.acked.add(title)
            except ClaudeDoError:
                pass  # the node is down or went down mid-request: not acknowledged

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("cycles", [1, pytest.param(8, marks=pytest.mark.slow)])
def test_repeated_kill_9_under_traffic_loses_no_acknowledged_command(
    tmp_path: Path, git_repo: Path, cycles: int
) -> None:
    rng = random.Random(cycles)
    node = NodeProcess(tmp_path / "home").start()
    node.ok("list", "add", "chaos", "--dir", str(git_repo))
    with Traffic(node.home) as traffic:
        for _ in range(cycles):
            target = len(traffic.acked) + rng.randint(5, 40)
            wait_until(lambda t=target: len(traffic.acked) >= t, 60, "commands to be acknowledged")
            node.kill9()
            node.start()
        target = len(traffic.acked) + 5
        wait_until(lambda: len(traffic.acked) >= target, 60, "traffic after the last restart")

    titles = [t["title"] for t in node.ok("tasks")]
    assert traffic.acked <= set(titles), "an acknowledged task was lost"
    assert len(titles) == len(set(titles)), "a task was created twice"
    counts = node.ok("sql", "select count(*) as n, count(distinct seq) as d from events")[0]
    info = node.ok("info")
    assert counts["n"] == counts["d"] == info["last_seq"] == info["checkpoint_seq"]

    before = node.ok("sql", "select * from tasks order by id")
    events_before = node.ok("sql", "select * from events order by seq")
    node.ok("projections", "rebuild")
    assert node.ok("sql", "select * from tasks order by id") == before
    assert node.ok("sql", "select * from events order by seq") == events_before
    assert node.stop() == 0
