"""The pull reader of the log and of a run's output: in order, from any sequence, filtered,
and neither twice nor skipped when its consumer is lost or its owner falls behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from events.stream_reader import StreamReader, stream_sequences
from tests.conftest import JetStreamEnv

STREAM = "READER_TEST"


@pytest.fixture
def env(jsenv: JetStreamEnv) -> Iterator[JetStreamEnv]:
    async def fresh() -> None:
        with contextlib.suppress(Exception):
            await jsenv.js.delete_stream(STREAM)
        await jsenv.js.add_stream(name=STREAM, subjects=["rt.>"])

    jsenv.run(fresh())
    yield jsenv
    jsenv.run(jsenv.js.delete_stream(STREAM))


async def _publish(env: JetStreamEnv, subjects: list[str]) -> None:
    for i, subject in enumerate(subjects):
        await env.js.publish(subject, str(i).encode())


async def _take(reader: StreamReader[Any], n: int, timeout_s: float = 20.0) -> list[Any]:
    """The next `n` items, or fail at the deadline."""
    return [await asyncio.wait_for(reader.queue.get(), timeout_s) for _ in range(n)]


def _item(seq: int, msg: Any) -> tuple[int, str, bytes]:
    return seq, msg.subject, msg.data


def test_it_reads_from_a_sequence_on_in_order_and_filtered(env: JetStreamEnv) -> None:
    async def go() -> list[Any]:
        await _publish(env, [f"rt.{'a' if i % 2 else 'b'}.{i}" for i in range(40)])
        reader = StreamReader(env.js, STREAM, "rt.a.>", 10, _item)
        await reader.start()
        try:
            got = await _take(reader, 16)
            await _publish(env, ["rt.a.live"])  # appended while it reads: delivered too
            got += await _take(reader, 1)
            return got
        finally:
            await reader.close()

    got = env.run(go())
    assert [seq for seq, _, _ in got] == [*range(10, 41, 2), 41]
    assert all(subject.startswith("rt.a.") for _, subject, _ in got)


def test_a_consumer_deleted_under_it_is_made_again_with_nothing_twice_or_skipped(
    env: JetStreamEnv,
) -> None:
    async def go() -> list[int]:
        await _publish(env, [f"rt.x.{i}" for i in range(20)])
        reader = StreamReader(env.js, STREAM, "rt.>", 1, _item)
        await reader.start()
        try:
            seqs = [seq for seq, _, _ in await _take(reader, 20)]
            lost = reader._consumer
            await env.js.delete_consumer(STREAM, lost)
            await _publish(env, [f"rt.y.{i}" for i in range(20)])
            seqs += [seq for seq, _, _ in await _take(reader, 20)]
            assert reader._consumer != lost  # it read the rest through a new consumer
            return seqs
        finally:
            await reader.close()

    assert env.run(go()) == list(range(1, 41))


def test_an_owner_that_falls_behind_gets_everything_in_order(env: JetStreamEnv) -> None:
    """A queue of two: the reader waits for room longer than a lost consumer's silence, and
    neither gives its consumer up for lost nor asks for more than there is room for."""

    async def go() -> list[int]:
        await _publish(env, [f"rt.z.{i}" for i in range(30)])
        reader = StreamReader(env.js, STREAM, "rt.>", 1, _item, max_queued=2)
        await reader.start()
        try:
            seqs = [seq for seq, _, _ in await _take(reader, 5)]
            first = reader._consumer
            deadline = time.monotonic() + 4.0  # past the reader's 3 s of silence
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # ok: the owner is busy elsewhere, on purpose
            seqs += [seq for seq, _, _ in await _take(reader, 25)]
            assert reader._consumer == first
            return seqs
        finally:
            await reader.close()

    assert env.run(go()) == list(range(1, 31))


def test_ack_subjects_of_both_forms_give_the_sequences() -> None:
    assert stream_sequences("$JS.ACK.S.c.1.17.5.1700000000000000000.3") == (17, 5)
    domain = "$JS.ACK.dom.ACCHASH.S.c.1.17.5.1700000000000000000.3.token"
    assert stream_sequences(domain) == (17, 5)
    with pytest.raises(ValueError):
        stream_sequences("_INBOX.x.y")
