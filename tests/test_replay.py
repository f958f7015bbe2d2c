"""The bulk replay reader returns exactly what the log holds, in order, for any range."""

from __future__ import annotations

import threading

import pytest

import events as ev
from events.log import STREAM, EventLog
from events.replay import ReplayUnsupported, replay
from projections.rebuild import apply_pipelined
from tests.conftest import JetStreamEnv, wait_until

ORIGIN = ev.Origin(node_id="n", correlation_id="c", actor="user:t")


def _fill(env: JetStreamEnv, n: int) -> EventLog:
    log = EventLog(env.js)
    env.run(log.ensure_stream())

    async def load() -> None:
        for i in range(n):
            created = ev.envelop(ev.TaskCreated(list_id="l", title=f"t{i}"), f"t{i}", ORIGIN)
            await log.append([created], expected_seq=0)

    env.run(load())
    return log


def test_replay_equals_the_log_read_with_nats_py(jsenv: JetStreamEnv) -> None:
    log = _fill(jsenv, 250)
    expected = jsenv.run(log.read_all())
    got = [e for batch in replay(jsenv.url, STREAM, 1, 250, batch=64) for e in batch]
    assert got == expected


@pytest.mark.parametrize(("start", "end"), [(1, 1), (10, 20), (200, 250), (250, 250)])
def test_replay_returns_exactly_the_asked_range(jsenv: JetStreamEnv, start: int, end: int) -> None:
    _fill(jsenv, 250)
    seqs = [e.seq for batch in replay(jsenv.url, STREAM, start, end, batch=7) for e in batch]
    assert seqs == list(range(start, end + 1))


def _other_stream(env: JetStreamEnv, name: str, payloads: list[bytes]) -> None:
    """A stream that, unlike the log, allows deletes, filled with `payloads` in order."""

    async def fill() -> None:
        await env.js.add_stream(name=name, subjects=[f"{name.lower()}.>"])
        for i, data in enumerate(payloads):
            await env.js.publish(f"{name.lower()}.m{i}", data)

    env.run(fill())


def _drop(env: JetStreamEnv, name: str) -> None:
    env.run(env.js.delete_stream(name))


def test_replay_of_a_stream_with_gaps_gives_each_message_its_own_sequence(
    jsenv: JetStreamEnv,
) -> None:
    _other_stream(jsenv, "GAPS", [f"m{i}".encode() for i in range(1, 31)])
    try:
        for seq in (2, 15, 16, 29):
            jsenv.run(jsenv.js.delete_msg("GAPS", seq))
        got = [e for batch in replay(jsenv.url, "GAPS", 1, 30, batch=8) for e in batch]
        kept = [s for s in range(1, 31) if s not in (2, 15, 16, 29)]
        assert [e.seq for e in got] == kept
        assert [e.data for e in got] == [f"m{s}".encode() for s in kept]
        assert [e.subject for e in got] == [f"gaps.m{s - 1}" for s in kept]
    finally:
        _drop(jsenv, "GAPS")


def test_large_messages_split_across_socket_reads_arrive_whole(jsenv: JetStreamEnv) -> None:
    # Sizes around the reader's 1 MiB receive and the server's 1 MB message limit, mixed with
    # small ones, so that frames end in every part of a read.
    sizes = [1, 900_000, 3, 700_000, 65_536, 999_000, 17, 400_001, 5, 1_000_000, 2]
    payloads = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    _other_stream(jsenv, "BIG", payloads)
    try:
        got = [e for batch in replay(jsenv.url, "BIG", 1, len(sizes), batch=4) for e in batch]
        assert [e.data for e in got] == payloads
        assert [e.seq for e in got] == list(range(1, len(sizes) + 1))
    finally:
        _drop(jsenv, "BIG")


def test_an_empty_range_reads_nothing(jsenv: JetStreamEnv) -> None:
    _fill(jsenv, 3)
    assert list(replay(jsenv.url, STREAM, 4, 3)) == []


def test_a_range_past_the_end_of_the_log_is_an_error(jsenv: JetStreamEnv) -> None:
    from events.replay import ReplayError

    _fill(jsenv, 3)
    with pytest.raises(ReplayError, match="the stream ended at 3, before 10"):
        list(replay(jsenv.url, STREAM, 1, 10, timeout_s=2.0))


def test_a_replay_waits_for_events_its_consumer_has_not_seen_yet(jsenv: JetStreamEnv) -> None:
    # A consumer on a cluster replica still catching up finds the tail missing for a while;
    # the replay waits for it instead of calling the log short. Here the tail is appended
    # only once the replay is seen waiting on its consumer.
    log = _fill(jsenv, 3)
    reading = replay(jsenv.url, STREAM, 1, 5, batch=3)
    assert [e.seq for e in next(reading)] == [1, 2, 3]

    def waiting() -> bool:
        async def infos() -> list[int]:
            names = await jsenv.js.consumers_info(STREAM)
            return [c.num_waiting or 0 for c in names]

        return any(n > 0 for n in jsenv.run(infos()))

    def append_tail() -> None:
        wait_until(waiting, 20, "the replay to wait on its consumer")
        for i in range(2):
            late = ev.envelop(ev.TaskCreated(list_id="l", title="late"), f"late{i}", ORIGIN)
            jsenv.run(log.append([late], expected_seq=0))

    appender = threading.Thread(target=append_tail)
    appender.start()
    try:
        assert [e.seq for batch in reading for e in batch] == [4, 5]
    finally:
        appender.join(30)


def test_tls_urls_are_left_to_nats_py() -> None:
    with pytest.raises(ReplayUnsupported):
        list(replay("tls://127.0.0.1:1", STREAM, 1, 1))


def test_pipelined_application_keeps_the_order_and_surfaces_reader_errors() -> None:
    seen: list[int] = []

    def apply(batch: list[int]) -> int:
        seen.extend(batch)
        return len(seen)

    assert apply_pipelined(([i, i + 1] for i in range(0, 100, 2)), apply) == 100  # type: ignore[arg-type]
    assert seen == list(range(100))

    def broken():  # type: ignore[no-untyped-def]
        yield [1]
        raise RuntimeError("socket gone")

    with pytest.raises(RuntimeError, match="socket gone"):
        apply_pipelined(broken(), apply)
