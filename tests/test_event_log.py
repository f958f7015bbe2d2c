"""The event log on a real JetStream stream: idempotent, concurrency-checked, append-only."""

from __future__ import annotations

import pytest
from nats.js.errors import ServerError

import events as ev
from events.log import STREAM, EventLog
from tests.conftest import JetStreamEnv

ORIGIN = ev.Origin(node_id="n", correlation_id="c", actor="user:t")


def _log(env: JetStreamEnv) -> EventLog:
    log = EventLog(env.js)
    env.run(log.ensure_stream())
    return log


def _task_events(task_id: str) -> list[ev.Envelope]:
    return [
        ev.envelop(ev.TaskCreated(list_id="l", title="t"), task_id, ORIGIN),
        ev.envelop(ev.TaskQueued(), task_id, ORIGIN),
    ]


def test_append_returns_stream_sequences_in_order(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    seqs = jsenv.run(log.append(_task_events("t1"), expected_seq=0))
    assert seqs == [1, 2]
    stored = jsenv.run(log.read_all())
    assert [r.seq for r in stored] == [1, 2]
    assert [ev.decode(r.data).event_type for r in stored] == ["TaskCreated", "TaskQueued"]
    assert stored[0].subject == "claudedo.evt.task.t1.TaskCreated"


def test_a_duplicate_append_is_stored_once(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    envs = _task_events("t1")
    first = jsenv.run(log.append(envs, expected_seq=0))
    # The same events again (a client retrying after a lost ack): same sequences, no new message.
    again = jsenv.run(log.append(envs, expected_seq=0))
    again_unchecked = jsenv.run(log.append(envs[1:], expected_seq=None))
    assert again == first and again_unchecked == first[1:]
    assert jsenv.run(log.last_seq()) == 2


def test_append_on_a_moved_aggregate_is_a_concurrency_error(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    created = ev.envelop(ev.TaskCreated(list_id="l", title="t"), "t1", ORIGIN)
    (seq,) = jsenv.run(log.append([created], expected_seq=0))
    # Two writers read the task at `seq`; the first wins, the second is refused.
    jsenv.run(log.append([ev.envelop(ev.TaskQueued(), "t1", ORIGIN)], expected_seq=seq))
    with pytest.raises(ev.ConcurrencyError):
        jsenv.run(log.append([ev.envelop(ev.TaskCancelled(), "t1", ORIGIN)], expected_seq=seq))
    assert jsenv.run(log.last_seq()) == 2


def test_creating_an_aggregate_twice_is_a_concurrency_error(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    jsenv.run(log.append(_task_events("t1")[:1], expected_seq=0))
    with pytest.raises(ev.ConcurrencyError):
        jsenv.run(log.append(_task_events("t1")[:1], expected_seq=0))


def test_other_aggregates_do_not_conflict(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    jsenv.run(log.append(_task_events("t1"), expected_seq=0))
    assert jsenv.run(log.append(_task_events("t2"), expected_seq=0)) == [3, 4]
    assert jsenv.run(log.last_seq_of(ev.aggregate_filter("task", "t1"))) == 2


def test_a_collection_guard_sees_every_list(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    guard = ev.collection_filter("list")
    jsenv.run(log.append([ev.envelop(ev.ListCreated(name="a"), "l1", ORIGIN)], 0, guard))
    with pytest.raises(ev.ConcurrencyError):
        jsenv.run(log.append([ev.envelop(ev.ListCreated(name="a"), "l2", ORIGIN)], 0, guard))


def test_the_stream_refuses_delete_and_purge(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    jsenv.run(log.append(_task_events("t1"), expected_seq=0))
    with pytest.raises(ServerError):
        jsenv.run(jsenv.js.delete_msg(STREAM, 1))
    with pytest.raises(ServerError):
        jsenv.run(jsenv.js.purge_stream(STREAM))
    info = jsenv.run(jsenv.js.stream_info(STREAM))
    assert info.config.deny_delete and info.config.deny_purge
    assert str(getattr(info.config.storage, "value", info.config.storage)) == "file"
    assert jsenv.run(log.last_seq()) == 2


def test_read_starts_at_any_sequence_and_follows_new_appends(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    jsenv.run(log.append(_task_events("t1"), expected_seq=0))

    async def scenario() -> list[int]:
        reader = await log.read(2)
        got = [r.seq for r in await reader.next_batch(100, timeout_s=5)]
        await log.append(_task_events("t2"), expected_seq=0)
        while len(got) < 3:
            got += [r.seq for r in await reader.next_batch(100, timeout_s=5)]
        await reader.close()
        return got

    assert jsenv.run(scenario()) == [2, 3, 4]


def test_append_without_a_stream_is_a_clear_error(jsenv: JetStreamEnv) -> None:
    from events.log import AppendError

    log = EventLog(jsenv.js)  # no ensure_stream: nothing stores the subjects
    with pytest.raises(AppendError, match="no stream"):
        jsenv.run(log.append(_task_events("t1"), expected_seq=0))


def test_many_concurrent_appends_each_get_their_own_sequence(jsenv: JetStreamEnv) -> None:
    import asyncio

    log = _log(jsenv)

    async def many() -> list[int]:
        results = await asyncio.gather(
            *(log.append(_task_events(f"t{i}"), expected_seq=0) for i in range(100))
        )
        return sorted(s for pair in results for s in pair)

    assert jsenv.run(many()) == list(range(1, 201))


def test_read_aggregate_returns_one_aggregates_events_in_order_across_batches(
    jsenv: JetStreamEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(jsenv)
    # Three messages a request, so seven events of t1 take three requests.
    monkeypatch.setattr("events.log._DIRECT_BATCH", 3)
    seq = jsenv.run(log.append(_task_events("t1"), expected_seq=0))[-1]
    jsenv.run(log.append(_task_events("t2"), expected_seq=0))
    for _ in range(5):
        seq = jsenv.run(log.append([ev.envelop(ev.TaskUnqueued(), "t1", ORIGIN)], seq))[-1]
    read = jsenv.run(log.read_aggregate(ev.aggregate_filter("task", "t1")))
    assert [r.seq for r in read] == [1, 2, 5, 6, 7, 8, 9]
    assert all(r.subject.startswith("claudedo.evt.task.t1.") for r in read)
    assert [ev.decode(r.data).event_type for r in read][:3] == [
        "TaskCreated", "TaskQueued", "TaskUnqueued"
    ]  # fmt: skip
    assert jsenv.run(log.read_aggregate(ev.aggregate_filter("task", "nobody"))) == []
    # Through the stream's leader (a writer deciding again after a conflict): the same events.
    assert jsenv.run(log.read_aggregate(ev.aggregate_filter("task", "t1"), leader=True)) == read
    assert jsenv.run(log.read_aggregate(ev.aggregate_filter("task", "x"), leader=True)) == []


# --- the hash chain -----------------------------------------------------------------------


def _chain_of(env: JetStreamEnv, aggregate: str, agg_id: str) -> list[tuple[str | None, str]]:
    """(prev, SHA-256 of the stored bytes) of each stored event of one aggregate, in order."""
    import hashlib

    stored = env.run(EventLog(env.js).read_aggregate(ev.aggregate_filter(aggregate, agg_id)))
    return [(ev.decode(r.data).prev, hashlib.sha256(r.data).hexdigest()) for r in stored]


def _assert_chained(chain: list[tuple[str | None, str]]) -> None:
    import itertools

    assert chain and chain[0][0] is None
    for (_, before), (prev, _) in itertools.pairwise(chain):
        assert prev == before


def test_each_event_carries_the_hash_of_its_aggregates_previous_stored_event(
    jsenv: JetStreamEnv,
) -> None:
    log = _log(jsenv)
    seqs = jsenv.run(log.append(_task_events("t1"), expected_seq=0))
    jsenv.run(log.append(_task_events("t2"), expected_seq=0))  # interleaved, its own chain
    # A later writer that never saw t1's bytes (another node, a restart) chains on too.
    other = EventLog(jsenv.js)
    later = [ev.envelop(ev.TaskCancelled(), "t1", ORIGIN)]
    jsenv.run(other.append(later, expected_seq=seqs[-1]))
    jsenv.run(other.append([ev.envelop(ev.TaskQueued(), "t1", ORIGIN)], expected_seq=None))
    chain = _chain_of(jsenv, "task", "t1")
    assert len(chain) == 4
    _assert_chained(chain)
    _assert_chained(_chain_of(jsenv, "task", "t2"))


def test_appends_without_a_check_racing_on_one_aggregate_make_one_chain(
    jsenv: JetStreamEnv,
) -> None:
    import asyncio

    log = _log(jsenv)
    jsenv.run(log.append(_task_events("t1")[:1], expected_seq=0))
    writers = [EventLog(jsenv.js) for _ in range(4)]

    async def race() -> None:
        await asyncio.gather(
            *(
                w.append([ev.envelop(ev.TaskQueued(), "t1", ORIGIN)], expected_seq=None)
                for w in writers
                for _ in range(5)
            )
        )

    jsenv.run(race())
    chain = _chain_of(jsenv, "task", "t1")
    assert len(chain) == 21
    _assert_chained(chain)


def test_a_list_is_chained_to_its_own_events_under_the_lists_guard(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    guard = ev.collection_filter("list")
    jsenv.run(log.append([ev.envelop(ev.ListCreated(name="a"), "l1", ORIGIN)], 0, guard))
    jsenv.run(log.append([ev.envelop(ev.ListCreated(name="b"), "l2", ORIGIN)], 1, guard))
    jsenv.run(log.append([ev.envelop(ev.ListConfigured(name="c"), "l1", ORIGIN)], 2, guard))
    _assert_chained(_chain_of(jsenv, "list", "l1"))
    assert [prev for prev, _ in _chain_of(jsenv, "list", "l2")] == [None]


def test_a_retried_append_keeps_the_chain_of_what_was_stored(jsenv: JetStreamEnv) -> None:
    log = _log(jsenv)
    envs = _task_events("t1")
    jsenv.run(log.append(envs, expected_seq=0))
    # The second event again, unchecked: a duplicate; the next append chains on the stored one.
    jsenv.run(log.append(envs[1:], expected_seq=None))
    jsenv.run(log.append([ev.envelop(ev.TaskCancelled(), "t1", ORIGIN)], expected_seq=2))
    chain = _chain_of(jsenv, "task", "t1")
    assert len(chain) == 3
    _assert_chained(chain)


def test_an_unchecked_batch_whose_first_event_was_stored_before_others_wrote_goes_on(
    jsenv: JetStreamEnv,
) -> None:
    # A writer's batch was half stored (its first event), another writer appended to the
    # same task since, and the batch is sent again unchecked: the stored event is
    # recognised, and the rest is appended after the other writer's, chained to it.
    log = _log(jsenv)
    created = ev.envelop(ev.TaskCreated(list_id="l", title="t"), "t1", ORIGIN)
    queued = ev.envelop(ev.TaskQueued(), "t1", ORIGIN)
    unqueued = ev.envelop(ev.TaskUnqueued(), "t1", ORIGIN)
    (first,) = jsenv.run(log.append([created], expected_seq=0))
    jsenv.run(log.append([queued], expected_seq=first))
    seqs = jsenv.run(log.append([created, unqueued], expected_seq=None))
    assert seqs == [first, first + 2]
    _assert_chained(_chain_of(jsenv, "task", "t1"))
