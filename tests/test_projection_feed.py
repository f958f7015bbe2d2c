"""The projection feed: events gather into batches under load, waiters cut the gathering short."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import events as ev
from claudedo_actors.node import projector_actor
from claudedo_actors.node.projector_actor import ProjectionFeed, ProjectorActor, batch_due
from events.log import STREAM, EventLog, RawEvent
from events.replay import replay_batches
from tests.conftest import JetStreamEnv

ORIGIN = ev.Origin(node_id="n", correlation_id="c", actor="user:t")


class CountingProjector(ProjectorActor):
    """The real projector, noting the size of every batch it is handed."""

    def __init__(self, path: Path, sizes: list[int]) -> None:
        super().__init__(path)
        self.sizes = sizes

    def apply(self, batch: list[RawEvent]) -> int:
        self.sizes.append(len(batch))
        return super().apply(batch)


class Feed:
    def __init__(self, env: JetStreamEnv, path: Path) -> None:
        self.env = env
        self.log = EventLog(env.js)
        env.run(self.log.ensure_stream())
        self.sizes: list[int] = []
        self.actor = CountingProjector.start(path, self.sizes)
        proxy = self.actor.proxy()
        self.feed = ProjectionFeed(
            self.log,
            lambda: proxy,
            lambda reason: False,
            functools.partial(replay_batches, env.url, STREAM),
        )
        env.run(self.feed.start())

    def append(self, *events: Any, task_id: str = "t1") -> int:
        envs = [ev.envelop(e, task_id, ORIGIN) for e in events]
        seqs: list[int] = self.env.run(self.log.append(envs, expected_seq=None))
        return seqs[-1]

    def wait_for(self, seq: int, hurry: bool, timeout_s: float = 30.0) -> None:
        self.env.run(self.feed.wait_for(seq, timeout_s=timeout_s, hurry=hurry))

    def close(self) -> None:
        self.env.run(self.feed.stop())
        self.actor.stop()


@pytest.fixture
def feed(jsenv: JetStreamEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Feed]:
    # Lingers far longer than any test waits, and than any machine has been up (the loop's
    # clock counts from its start): a batch that comes early was asked for, and the first
    # event, applied at once below, shows that the feed lingers only after a batch.
    monkeypatch.setattr(projector_actor, "_LINGER_S", 1e9)
    monkeypatch.setattr(projector_actor, "_QUERY_LINGER_S", 1e9)
    f = Feed(jsenv, tmp_path / "projection.duckdb")
    # Closed however the test ends: a projector actor left running keeps the test process
    # from exiting.
    try:
        # After a quiet moment an event is applied at once, nobody waiting for it.
        first = f.append(ev.TaskCreated(list_id="l1", title="t"))
        f.wait_for(first, hurry=False)
        assert f.sizes == [1]
        yield f
    finally:
        f.close()


def _subtasks(n: int) -> list[ev.SubtaskAdded]:
    return [ev.SubtaskAdded(subtask_id=f"s{i}", title=f"step {i}") for i in range(n)]


def test_events_gather_while_nobody_waits_and_a_command_gets_them_at_once(feed: Feed) -> None:
    last = feed.append(*_subtasks(10))
    # Under load (a batch was just applied) nothing more is applied before the linger ends...
    with pytest.raises(TimeoutError):
        feed.wait_for(last, hurry=False, timeout_s=1.0)
    assert feed.sizes == [1]
    # ...unless a command waits for its events: then the feed applies what it holds at once.
    feed.wait_for(last, hurry=True)
    assert feed.sizes[0] == 1 and sum(feed.sizes) == 11
    assert len(feed.sizes) <= 3  # gathered, not one batch an event


def test_a_query_waits_only_for_the_query_linger(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector_actor, "_QUERY_LINGER_S", 0.0)
    last = feed.append(*_subtasks(3))
    feed.wait_for(last, hurry=False)
    assert sum(feed.sizes) == 4


def test_a_command_after_a_query_started_waiting_still_hurries(feed: Feed) -> None:
    last = feed.append(*_subtasks(2))

    async def both() -> None:
        query = asyncio.ensure_future(feed.feed.wait_for(last, timeout_s=30.0, hurry=False))
        await asyncio.sleep(0)  # ok: one turn of the loop, so the query starts waiting first
        await feed.feed.wait_for(last, timeout_s=30.0, hurry=True)
        await query

    feed.env.run(both())
    assert sum(feed.sizes) == 3


def test_the_next_batch_is_due_one_linger_after_the_last_unless_a_query_waits() -> None:
    linger, query_linger = projector_actor._LINGER_S, projector_actor._QUERY_LINGER_S
    assert batch_due(100.0, []) == 100.0 + linger
    # A query that came after the last batch: the query linger, from that batch.
    assert batch_due(100.0, [100.1, 100.2]) == 100.0 + query_linger


def test_a_query_that_came_during_a_batch_without_its_events_waits_one_linger_from_then() -> None:
    # It came at 99.9 while the batch applied until 100.0 lacked its events: the next batch is
    # due one query linger after it came, not after that batch (two lingers and two batches).
    query_linger = projector_actor._QUERY_LINGER_S
    assert batch_due(100.0, [100.1, 99.9]) == 99.9 + query_linger
