"""A real 3-server NATS cluster: streams with 3 replicas, two ClaudeDo nodes on different
servers, one server killed under load and started again. Tasks keep running and finishing,
no acknowledged event is lost or doubled, and both projections equal a rebuild."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from events.log import OUTPUT_STREAM, STREAM
from tests.conftest import wait_until
from tests.faults.cluster import Cluster
from tests.faults.invariants import Report, check
from tests.faults.test_fault_suite import _add, _node_id, _repo, _settle_all
from tests.runner_support import Runner


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster").start_all()
    yield c
    c.stop()


def _replicas(url: str) -> list[int]:
    async def ask() -> list[int]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            return [(await js.stream_info(s)).config.num_replicas for s in (STREAM, OUTPUT_STREAM)]
        finally:
            await nc.close()

    return asyncio.run(ask())


@pytest.mark.parametrize(
    "kills", [1, pytest.param(4, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_a_cluster_losing_a_server_under_load_loses_no_work(
    tmp_path: Path, cluster: Cluster, kills: int
) -> None:
    rng = random.Random(kills)
    repo = _repo(tmp_path)
    a = Runner(tmp_path, slots=2, name="a", env={"FAKE_CLAUDE_SLOW_S": "1"},
               extra=["--nats", cluster.url(0)], creds=cluster.creds).start()  # fmt: skip
    b = Runner(tmp_path, slots=2, name="b", env={"FAKE_CLAUDE_SLOW_S": "1"},
               extra=["--nats", cluster.url(1)], creds=cluster.creds).start()  # fmt: skip
    report = Report(f"3-server cluster, {kills} server kill(s)")
    assert _replicas(cluster.login(2)) == [3, 3]
    a.add_list(repo, "cluster")
    acked: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            _add(a if i % 2 else b, rng, "cluster", acked, i)
            stop.wait(0.1)  # the load's pace, not a synchronisation

    traffic = threading.Thread(target=load, daemon=True)
    traffic.start()
    try:
        for k in range(kills):
            before = len(acked)
            wait_until(lambda n=before: len(acked) >= n + 6, 120, "load before the kill")
            victim = k % 3  # the server of node a first, then b's, then the third one
            cluster.kill(victim)
            report.counts["server kills"] += 1
            # Work goes on without it: more commands acknowledged, tasks finishing.
            before = len(acked)
            wait_until(lambda n=before: len(acked) >= n + 6, 120, "load without it")
            cluster.start(victim)
    finally:
        stop.set()
        traffic.join(30)
    wait_until(cluster._formed, 60, "the cluster to be whole again")
    _settle_all(a, timeout_s=300)
    _settle_all(b, timeout_s=300)
    ids = [_node_id(a), _node_id(b)]
    a.stop()
    b.stop()
    files = [r.node.home / "projection.duckdb" for r in (a, b)]
    check(report, cluster.login(2), files, [repo], ids, acked, tmp_path)
    print(report.line())
    for line in report.violations:
        print("  " + line)
    assert report.violations == []
