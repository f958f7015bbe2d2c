"""The node's checkpointer, on a log kept in memory: it reads the log only when a checkpoint
may be due, signs the right hash, and never checkpoints only checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

import events as ev
from claudedo_actors.node.checkpointer import Checkpointer
from events.audit import LogVerifier, SigningKey
from events.log import STREAM, RawEvent

ORIGIN = ev.Origin(node_id="n", correlation_id="", actor="user:t")


class MemoryLog:
    def __init__(self) -> None:
        self.messages: list[RawEvent] = []
        self.reads = 0

    def add(self, n: int) -> None:
        for _ in range(n):
            env = ev.envelop(ev.ListCreated(name="x"), ev.new_aggregate_id(), ORIGIN)
            self._store(env)

    def _store(self, env: ev.Envelope) -> None:
        data = ev.encode(msgspec.structs.replace(env, prev=None))  # each its aggregate's first
        self.messages.append(RawEvent(len(self.messages) + 1, env.subject, data))

    def read(self, first: int, last: int) -> Iterator[list[RawEvent]]:
        self.reads += 1
        yield self.messages[first - 1 : last]

    def append(self, envs: list[ev.Envelope], expected: int | None) -> list[int]:
        for env in envs:
            self._store(env)
        return [len(self.messages)]


def _checkpointer(log: MemoryLog, tmp_path: Path, key: SigningKey) -> Checkpointer:
    return Checkpointer("n", STREAM, key, log.read, log.append, tmp_path / "cp.json",
                        every=5, interval_s=100.0)  # fmt: skip


def test_it_reads_the_log_only_when_a_checkpoint_may_be_due(tmp_path: Path) -> None:
    log, key = MemoryLog(), SigningKey(SigningKey.new_seed())
    cp = _checkpointer(log, tmp_path, key)
    for _ in range(4):
        log.add(1)
        cp.advanced(len(log.messages))
        assert cp.step(now=0.0) is False
    assert log.reads == 0  # four new events, none read yet
    log.add(1)
    cp.advanced(len(log.messages))
    assert cp.step(now=0.0) is True and log.reads == 1
    verifier = LogVerifier(STREAM, {key.id: key.public_hex})
    verifier.feed_batch(log.messages)
    result = verifier.finish()
    assert [c.upto_seq for c in result.checkpoints] == [5]
    assert not [d for d in result.discrepancies if "checkpoint" in d.what]


def test_fewer_events_are_checkpointed_after_the_interval_and_checkpoints_alone_never(
    tmp_path: Path,
) -> None:
    log, key = MemoryLog(), SigningKey(SigningKey.new_seed())
    cp = _checkpointer(log, tmp_path, key)
    log.add(2)
    cp.advanced(2)
    assert cp.step(now=cp._behind_since + 50) is False and log.reads == 0
    assert cp.step(now=cp._behind_since + 100) is True  # the interval passed
    cp.advanced(len(log.messages))  # its own checkpoint
    assert cp.step(now=cp._behind_since + 1000) is False  # read, but only a checkpoint
    assert cp.pending == 0 and cp.seq == len(log.messages)


def test_its_place_in_the_log_survives_a_restart(tmp_path: Path) -> None:
    log, key = MemoryLog(), SigningKey(SigningKey.new_seed())
    cp = _checkpointer(log, tmp_path, key)
    log.add(3)
    cp.advanced(3)
    cp.step(now=cp._behind_since + 100)
    again = _checkpointer(log, tmp_path, key)
    assert (again.seq, again.log_hash, again.pending) == (cp.seq, cp.log_hash, cp.pending)


def test_events_that_come_while_it_reads_wait_their_own_interval(tmp_path: Path) -> None:
    log, key = MemoryLog(), SigningKey(SigningKey.new_seed())
    cp = _checkpointer(log, tmp_path, key)
    reading = log.read

    def read_while_more_come(first: int, last: int) -> Iterator[list[RawEvent]]:
        yield from reading(first, last)
        log.add(1)  # one more event, learnt while this read went on
        cp.advanced(len(log.messages))

    cp._read_log = read_while_more_come
    log.add(2)
    cp.advanced(2)
    start = cp._behind_since
    assert cp.step(now=start + 100) is True  # the first two, after the interval
    # The third came just now: no checkpoint of it until its own interval has passed.
    assert cp.step(now=start + 100.5) is False
    assert cp.checkpoints == 1
    assert cp.step(now=start + 201) is True
