"""The log's proof, checked without NATS: hash chains, the log hash, signed checkpoints."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

import events as ev
from events.audit import (
    ZERO_HASH,
    LogVerifier,
    SigningKey,
    chained,
    checkpoint_message,
    next_log_hash,
)
from events.checkpoints import LogCheckpointed
from events.log import STREAM

ORIGIN = ev.Origin(node_id="n1", correlation_id="c", actor="user:t")
KEY = SigningKey(bytes(range(32)))


def _history() -> list[ev.Envelope]:
    envs = []
    for i in range(3):
        task = f"t{i}"
        envs += [
            ev.envelop(ev.TaskCreated(list_id="l1", title=f"task {i}"), task, ORIGIN),
            ev.envelop(ev.TaskQueued(), task, ORIGIN),
        ]
    envs.insert(0, ev.envelop(ev.ListCreated(name="a"), "l1", ORIGIN))
    envs.append(ev.envelop(ev.TaskCancelled(), "t0", ORIGIN))
    return envs


def _stored(envs: list[ev.Envelope]) -> list[tuple[int, str, bytes]]:
    return [
        (i, env.subject, data)
        for i, (env, data) in enumerate(zip(envs, chained(envs), strict=True), 1)
    ]


def _log_hash(messages: list[tuple[int, str, bytes]]) -> str:
    digest = ZERO_HASH
    for seq, subject, data in messages:
        digest = next_log_hash(digest, seq, subject, hashlib.sha256(data).digest())
    return digest.hex()


def _checkpoint(
    messages: list[tuple[int, str, bytes]], key: SigningKey = KEY, log_hash: str | None = None
) -> tuple[int, str, bytes]:
    upto = messages[-1][0]
    hashed = log_hash or _log_hash(messages)
    event = LogCheckpointed(
        node_id="n1",
        stream=STREAM,
        upto_seq=upto,
        log_hash=hashed,
        key=key.public_hex,
        signature=key.sign(checkpoint_message(STREAM, upto, hashed)),
    )
    env = ev.envelop(event, key.id, ORIGIN)
    (data,) = chained([env])
    return upto + 1, env.subject, data


def _verify(messages: list[tuple[int, str, bytes]], trusted: dict[str, str] | None = None):
    verifier = LogVerifier(STREAM, {KEY.id: KEY.public_hex} if trusted is None else trusted)
    for seq, subject, data in messages:
        verifier.feed(seq, subject, data)
    return verifier.finish()


def _lines(result) -> list[str]:
    return [d.line() for d in result.discrepancies]


def test_an_untouched_chained_log_with_a_checkpoint_verifies() -> None:
    messages = _stored(_history())
    messages.append(_checkpoint(messages))
    result = _verify(messages)
    assert _lines(result) == []
    assert result.chained == len(messages) and result.unchained == 0
    assert result.vouched_upto == len(messages) - 1


def test_an_edited_event_breaks_its_aggregates_chain_and_the_checkpoint() -> None:
    messages = _stored(_history())
    messages.append(_checkpoint(messages))
    seq, subject, data = messages[2]  # t0's TaskQueued
    messages[2] = (seq, subject, data.replace(b'"actor":"user:t"', b'"actor":"user:x"'))
    lines = _lines(_verify(messages))
    # t0's next event (its TaskCancelled, seq 8) no longer follows; the signed hash differs.
    assert any(line.startswith("seq 8: chain broken") for line in lines)
    assert any(line.startswith("seq 9: log up to seq 8 hashes to") for line in lines)


def test_a_dropped_event_is_a_gap_and_breaks_the_chain() -> None:
    messages = _stored(_history())
    del messages[3]
    lines = _lines(_verify(messages))
    assert "seq 5: sequence(s) 4 missing before it" in lines
    assert any(line.startswith("seq 5: chain broken") for line in lines)


def test_missing_events_at_the_end_are_reported_when_the_last_sequence_is_known() -> None:
    messages = _stored(_history())
    verifier = LogVerifier(STREAM, {})
    for seq, subject, data in messages[:-2]:
        verifier.feed(seq, subject, data)
    assert _lines(verifier.finish(last_seq=len(messages))) == ["log: sequence(s) 7..8 missing"]


def test_an_event_without_a_chain_after_chains_began_is_reported() -> None:
    messages = _stored(_history())
    forged = ev.envelop(ev.TaskQueued(), "t1", ORIGIN)
    messages.append((len(messages) + 1, forged.subject, ev.encode(forged)))
    assert _lines(_verify(messages)) == [
        f"seq {len(messages)}: no hash chain (prev), after chains began"
    ]


def test_events_written_before_chains_began_are_accepted_and_counted() -> None:
    envs = _history()
    legacy = [(i, env.subject, ev.encode(env)) for i, env in enumerate(envs[:3], 1)]
    # Chained events after them chain onto the legacy events' stored bytes.
    later = ev.envelop(ev.TaskCancelled(), "t0", ORIGIN)
    prev = hashlib.sha256(legacy[2][2]).hexdigest()  # t0's last legacy event (its queue)
    data = ev.encode(msgspec.structs.replace(later, prev=prev))
    result = _verify([*legacy, (4, later.subject, data)])
    assert _lines(result) == []
    assert (result.unchained, result.chained) == (3, 1)


def test_a_checkpoint_signed_by_a_key_nobody_trusts_is_reported() -> None:
    messages = _stored(_history())
    stranger = SigningKey(bytes(32))
    messages.append(_checkpoint(messages, key=stranger))
    lines = _lines(_verify(messages))
    assert lines == [f"seq 9: checkpoint signed by key {stranger.id}, which is not trusted"]


def test_a_checkpoint_whose_signature_does_not_match_is_reported() -> None:
    messages = _stored(_history())
    seq, subject, data = _checkpoint(messages)
    raw = msgspec.json.decode(data)
    raw["event"]["log_hash"] = "0" * 64  # signed over another hash
    messages.append((seq, subject, msgspec.json.encode(raw)))
    assert _lines(_verify(messages)) == [
        f"seq 9: checkpoint signature by key {KEY.id} is not valid"
    ]


def test_a_message_that_is_not_an_event_is_reported_and_the_chain_goes_on() -> None:
    messages = _stored(_history())
    messages.append((len(messages) + 1, "claudedo.evt.task.t1.TaskQueued", b"not json"))
    lines = _lines(_verify(messages))
    assert len(lines) == 1 and lines[0].startswith("seq 9: not a valid event")


def test_only_one_aggregates_discrepancies_are_reported_with_an_id() -> None:
    messages = _stored(_history())
    for index in (2, 4):  # t0's and t1's TaskQueued edited: their next events break
        seq, subject, data = messages[index]
        messages[index] = (seq, subject, data.replace(b'"c"', b'"d"'))
    later = ev.envelop(ev.TaskCancelled(), "t1", ORIGIN)
    messages.append((9, later.subject, ev.encode(msgspec.structs.replace(later, prev="0" * 64))))
    verifier = LogVerifier(STREAM, {}, only="t1")
    for seq, subject, data in messages:
        verifier.feed(seq, subject, data)
    assert [d.where for d in verifier.finish().discrepancies] == ["seq 9"]


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32))])
def test_a_signing_key_never_shows_its_seed(seed: bytes) -> None:
    key = SigningKey(seed)
    assert seed.hex() not in repr(key) and key.id in repr(key)
