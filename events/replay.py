"""Bulk replay of the log: a small, synchronous NATS reader built for throughput.

nats-py delivers JetStream messages at about 36k/s here (it parses every header block with
the email parser); a rebuild must read faster than it projects. This reader pulls large
batches from an ephemeral pull consumer over events.wire and skips header parsing. Where the
wire client cannot be used it raises ReplayUnsupported; callers then read with nats-py.
See docs/decisions/0003-minimal-wire-client.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator

from events.credentials import Credential, connect_options
from events.log import RawEvent
from events.wire import WireConnection, WireError, WireUnsupported

# The replay's own names for the wire client's errors.
ReplayUnsupported = WireUnsupported
ReplayError = WireError
log = logging.getLogger("claudedo.replay")


def _stream_seq(reply: bytes) -> int:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending> (v1), or with
    # <domain>.<account hash> after ACK and a random token at the end (v2).
    tokens = reply.split(b".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def replay(
    url: str,
    stream: str,
    from_seq: int,
    until_seq: int,
    batch: int = 20_000,
    timeout_s: float = 30.0,
    credential: Credential | None = None,
) -> Iterator[list[RawEvent]]:
    """Batches of the stream's messages from `from_seq` to `until_seq` (inclusive), in order,
    read as `credential`'s user if one is given."""
    if until_seq < from_seq:
        return
    cred = credential
    login = (cred.user, cred.password, cred.inbox_prefix) if cred else (None, None, None)
    conn = WireConnection(url, timeout_s, *login)
    inbox = f"{conn.inbox_prefix}.replay{os.urandom(8).hex()}"
    try:
        conn.send(f"SUB {inbox}.* 1\r\n".encode())
        config = {
            "stream_name": stream,
            "config": {
                "deliver_policy": "by_start_sequence",
                "opt_start_seq": from_seq,
                "ack_policy": "none",
                "inactive_threshold": 60_000_000_000,
                "mem_storage": True,
                "num_replicas": 1,
            },
        }
        conn.pub(f"$JS.API.CONSUMER.CREATE.{stream}", f"{inbox}.c", json.dumps(config).encode())
        frames = conn.frames()
        _, _, _, created = next(frames)
        reply = json.loads(created)
        if "error" in reply:
            raise ReplayError(f"cannot create replay consumer: {reply['error']}")
        consumer = reply["name"]
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        seq = from_seq - 1
        stalled_at: float | None = None
        # Once a no-wait fetch came back empty before the end: fetches that wait a while
        # (well within the socket's timeout) for the next message.
        waiting = {"expires": int(min(1.0, timeout_s / 10) * 1e9)}
        while seq < until_seq:
            want = min(batch, until_seq - seq)
            # In a cluster the consumer may sit on a replica still catching up after a restart:
            # an empty answer is waited on (for up to `timeout_s`), not taken for the end.
            request = {"batch": want, "no_wait": True} if stalled_at is None else waiting
            conn.pub(next_subject, f"{inbox}.f", json.dumps({**request, "batch": want}).encode())
            subjects, acks, payloads, status = conn.messages(want)
            if status and not status.startswith((b"NATS/1.0 404", b"NATS/1.0 408")):
                raise ReplayError(status.decode(errors="replace"))
            if not payloads:
                now = time.monotonic()
                stalled_at = now if stalled_at is None else stalled_at
                if now - stalled_at > timeout_s:
                    raise ReplayError(f"the stream ended at {seq}, before {until_seq}")
                continue
            stalled_at = None
            first, last = _stream_seq(acks[0]), _stream_seq(acks[-1])
            # The log denies deletes, so its sequences have no gaps and the batch's are known
            # from its first and last; another stream may have them, and is read one by one.
            seqs: Iterable[int] = (
                range(first, last + 1)
                if last - first + 1 == len(acks)
                else [_stream_seq(ack) for ack in acks]
            )
            out = [
                RawEvent(s, subject.decode(), payload)
                for s, subject, payload in zip(seqs, subjects, payloads, strict=True)
                if s <= until_seq
            ]
            seq = last
            if out:
                yield out
        conn.pub(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", f"{inbox}.d", b"")
    finally:
        conn.close()


def replay_batches(
    url: str,
    stream: str,
    from_seq: int,
    until_seq: int,
    batch: int = 20_000,
    credential: Credential | None = None,
) -> Iterator[list[RawEvent]]:
    """`replay`, or nats-py's ordered consumer where the wire client cannot be used."""
    try:
        yield from replay(url, stream, from_seq, until_seq, batch=batch, credential=credential)
    except ReplayUnsupported as exc:
        log.info("bulk replay reader unavailable (%s): reading with nats-py", exc)
        yield from _read_with_nats_py(url, stream, from_seq, until_seq, batch, credential)


def _read_with_nats_py(
    url: str,
    stream: str,
    from_seq: int,
    until_seq: int,
    batch: int,
    credential: Credential | None = None,
) -> Iterator[list[RawEvent]]:
    import asyncio

    import nats

    from events.log import EventLog

    async def read_all() -> list[RawEvent]:
        login = connect_options(url, credential)
        nc = await nats.connect(url, **login)
        try:
            return await EventLog(nc.jetstream(), stream).read_all(from_seq, until_seq)
        finally:
            await nc.close()

    events = asyncio.run(read_all())
    for i in range(0, len(events), batch):
        yield events[i : i + batch]
