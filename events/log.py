"""The event log: an append-only JetStream stream, the only source of truth."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from events.codec import Envelope, encode
from events.stream_reader import StreamReader
from events.subjects import EVENTS_ALL, OUTPUT_ALL, aggregate_filter

STREAM = "CLAUDEDO_EVENTS"
OUTPUT_STREAM = "CLAUDEDO_OUTPUT"
OUTPUT_MAX_AGE_S = 30 * 24 * 3600.0
_WRONG_LAST_SEQUENCE = 10071
# The same refusal from a clustered stream while another conditional write to the subject is
# still being replicated ("wrong last sequence", without the number).
_WRONG_LAST_SEQUENCE_IN_FLIGHT = 10164
_PUBLISH_TIMEOUT_S = 5.0
_PUBLISH_ATTEMPTS = 3
# Messages one direct get answers when an aggregate is read.
_DIRECT_BATCH = 1_000
# How often an append without a check reads the aggregate's last event again after losing
# the race for it.
_UNCHECKED_ATTEMPTS = 20
# Aggregates whose last event's hash a log keeps, so an append after its own needs no read.
_TIPS_KEPT = 4_096


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConcurrencyError(Exception):
    """The aggregate moved since it was read: someone else appended first."""

    def __init__(self, guard: str, expected_seq: int, detail: str) -> None:
        super().__init__(f"{guard} moved past sequence {expected_seq} ({detail})")
        self.guard = guard
        self.expected_seq = expected_seq


class _PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class AppendError(Exception):
    """The server refused an append for a reason other than concurrency."""

    def __init__(self, err_code: int, description: str) -> None:
        super().__init__(f"append refused ({err_code}): {description}")
        self.err_code = err_code


class ReadError(Exception):
    """The server answered a read with an error."""


class RawEvent(msgspec.Struct, frozen=True):
    """One stored message of the log, not yet decoded."""

    seq: int
    subject: str
    data: bytes


def stream_config(name: str = STREAM, replicas: int = 1) -> js_api.StreamConfig:
    """File storage, no limits, deny delete and purge: the server keeps the log append-only."""
    return js_api.StreamConfig(
        name=name,
        subjects=[EVENTS_ALL],
        storage=js_api.StorageType.FILE,
        retention=js_api.RetentionPolicy.LIMITS,
        discard=js_api.DiscardPolicy.NEW,
        num_replicas=replicas,
        duplicate_window=120.0,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


def output_stream_config(
    name: str = OUTPUT_STREAM, max_age_s: float = OUTPUT_MAX_AGE_S, replicas: int = 1
) -> js_api.StreamConfig:
    """Agent output lines: high volume, so a stream of their own that forgets after `max_age_s`.

    The run's NDJSON file and the SHA-256 in its RunFinished event are the lasting record.
    """
    return js_api.StreamConfig(
        name=name,
        subjects=[OUTPUT_ALL],
        storage=js_api.StorageType.FILE,
        retention=js_api.RetentionPolicy.LIMITS,
        discard=js_api.DiscardPolicy.OLD,
        max_age=max_age_s,
        num_replicas=replicas,
        allow_direct=True,
    )


class EventLog:
    """Appends with idempotence and optimistic concurrency; reads from any sequence."""

    def __init__(self, js: JetStreamContext, stream: str = STREAM) -> None:
        self._js = js
        self._nc: Any = js._nc  # the connection the JetStream context publishes on
        self.stream = stream
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._ack_prefix = ""
        self._ack_counter = 0
        self._tips: dict[str, tuple[int, str]] = {}  # aggregate filter -> (seq, hash), LRU

    def cluster_size(self) -> int:
        """How many servers the connected NATS cluster has (1 for a single server), as its
        INFO tells: every server's client URL is listed once it joined."""
        info = getattr(self._nc, "_server_info", None) or {}
        if not info.get("cluster"):
            return 1
        return max(1, len(set(info.get("connect_urls") or [])))

    async def ensure_stream(self, replicas: int | None = None) -> None:
        """Create the streams if missing; an existing stream is left as it is. `replicas`:
        how many servers keep each message (default: min(3, the cluster's size))."""
        if replicas is None:
            replicas = min(3, self.cluster_size())
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            await self._js.add_stream(stream_config(self.stream, replicas))
        try:
            await self._js.stream_info(OUTPUT_STREAM)
        except NotFoundError:
            await self._js.add_stream(output_stream_config(replicas=replicas))

    async def append(
        self,
        envelopes: Sequence[Envelope],
        expected_seq: int | None,
        guard: str | None = None,
    ) -> list[int]:
        """Append events in order, each only if `guard`'s last sequence is what we expect.

        `guard` is a subject filter (default: the first event's aggregate); `expected_seq` is
        its last sequence when the caller read it (0: no event yet; None: no check). Returns
        the stream sequence of each event. Raises ConcurrencyError when the guard moved.

        Each event is stored with `prev`, the SHA-256 of its aggregate's previous stored
        event (the hash chain `claudedo audit verify` checks). An append without a check is
        still guarded by the aggregate's last sequence, read here, so two unchecked appends
        never claim the same predecessor; if another writer came first, it is read again.
        """
        if not envelopes:
            return []
        if guard is None:
            guard = aggregate_filter(envelopes[0].aggregate, envelopes[0].aggregate_id)
        if expected_seq is None:
            return await self._append_unchecked(envelopes, guard)
        return await self._append_checked(envelopes, expected_seq, guard)

    async def _append_unchecked(self, envelopes: Sequence[Envelope], guard: str) -> list[int]:
        own = aggregate_filter(envelopes[0].aggregate, envelopes[0].aggregate_id)
        for attempt in range(_UNCHECKED_ATTEMPTS):
            # The guard's last sequence now; with the aggregate's own filter it is also the
            # predecessor the chain needs.
            last = await self._last_of(own if guard == own else guard)
            try:
                return await self._append_checked(envelopes, 0 if last is None else last[0], guard)
            except ConcurrencyError:
                if attempt == _UNCHECKED_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _append_checked(
        self, envelopes: Sequence[Envelope], expected_seq: int, guard: str
    ) -> list[int]:
        seqs: list[int] = []
        expected = expected_seq
        tips: dict[str, str | None] = {}  # aggregate filter -> hash of its last event
        for env in envelopes:
            own = aggregate_filter(env.aggregate, env.aggregate_id)
            if own not in tips:
                tips[own] = await self._tip(own, expected, guard)
            payload = encode(msgspec.structs.replace(env, prev=tips[own]))
            seq, duplicate = await self._append_one(env, payload, expected, guard)
            seqs.append(seq)
            if duplicate and seq < expected:
                # Stored long before, and the guard moved on since (an unchecked append
                # that read the log again): the rest goes on from where the guard is now.
                digest = await self._tip(own, expected, guard)
                tips[own] = digest
                continue
            if duplicate:
                # Stored before, maybe with another predecessor: the chain goes on from
                # the bytes the log holds, not from ours.
                digest = _sha256((await self._js.get_msg(self.stream, seq)).data or b"")
            else:
                digest = _sha256(payload)
            tips[own] = digest
            self._remember(own, seq, digest)
            expected = seq
        return seqs

    async def _tip(self, own: str, expected: int, guard: str) -> str | None:
        """The SHA-256 of aggregate `own`'s last event while `guard`'s last is `expected`
        (None: the aggregate has none). If the guard moved, the append fails anyway."""
        if guard == own:
            if expected == 0:
                return None
            known = self._tips.get(own)
            if known is not None and known[0] == expected:
                return known[1]
            try:
                msg = await self._js.get_msg(self.stream, expected)
            except NotFoundError:
                return None  # the append is refused: nothing is at the expected sequence
            return _sha256(msg.data or b"")
        try:
            msg = await self._js.get_last_msg(self.stream, own)
        except NotFoundError:
            return None
        return _sha256(msg.data or b"")

    def _remember(self, own: str, seq: int, digest: str) -> None:
        tips = self._tips
        tips.pop(own, None)
        tips[own] = (seq, digest)
        if len(tips) > _TIPS_KEPT:
            del tips[next(iter(tips))]

    async def _append_one(
        self, env: Envelope, payload: bytes, expected: int, guard: str
    ) -> tuple[int, bool]:
        """Publish one event; its sequence, and True if it had been stored before."""
        headers = {
            "Nats-Msg-Id": env.event_id,
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-Expected-Last-Subject-Sequence-Subject": guard,
        }
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                ack = _decode_ack(await self._publish(env.subject, payload, headers))
            except TimeoutError:
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise
                continue  # the same Nats-Msg-Id: a retry is stored at most once
            if ack.error is None:
                return ack.seq, ack.duplicate
            err_code = int(ack.error.get("err_code", 0))
            description = str(ack.error.get("description", ""))
            if err_code not in (_WRONG_LAST_SEQUENCE, _WRONG_LAST_SEQUENCE_IN_FLIGHT):
                raise AppendError(err_code, description)
            # A retried publish that was stored the first time also fails the sequence
            # check. It is a duplicate, not a conflict, when the guard's first message after
            # the expected sequence is this very event.
            stored = await self._first_after(guard, expected)
            if stored is not None and stored[1] == env.event_id:
                return stored[0], True
            raise ConcurrencyError(guard, expected, description)
        raise AssertionError("unreachable")

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> bytes:
        """Publish and wait for the stream's ack on a shared reply subscription.

        nats-py's `js.publish` costs a request setup per message; one wildcard inbox with a
        future per append lets many concurrent appends share the connection (see
        docs/benchmarks.md), and, unlike `publish_async`, it surfaces API errors.
        """
        if not self._ack_prefix:
            prefix = self._nc.new_inbox()
            await self._nc.subscribe(prefix + ".*", cb=self._on_ack)
            self._ack_prefix = prefix
        self._ack_counter += 1
        reply = f"{self._ack_prefix}.{self._ack_counter}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._acks[reply] = future
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
            return await asyncio.wait_for(future, _PUBLISH_TIMEOUT_S)
        finally:
            self._acks.pop(reply, None)

    async def _on_ack(self, msg: Any) -> None:
        future = self._acks.get(msg.subject)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(AppendError(503, f"no stream stores {self.stream}'s subjects"))
        else:
            future.set_result(msg.data)

    async def _last_of(self, subject_filter: str) -> tuple[int, str | None] | None:
        try:
            msg = await self._js.get_last_msg(self.stream, subject_filter)
        except NotFoundError:
            return None
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        return int(msg.seq or 0), msg_id

    async def _first_after(self, subject_filter: str, seq: int) -> tuple[int, str | None] | None:
        try:
            msg = await self._js.get_msg(self.stream, seq + 1, subject=subject_filter, next=True)
        except NotFoundError:
            return None
        return int(msg.seq or 0), (msg.headers or {}).get("Nats-Msg-Id")

    async def read_aggregate(self, subject_filter: str, leader: bool = False) -> list[RawEvent]:
        """Every stored event on the filter's subjects, in order (one aggregate: a few dozen).

        Read with batched direct gets: one request answers up to _DIRECT_BATCH messages (a
        read per message made dispatching a task cost a round trip per event of its past).
        In a cluster a direct get may be answered by a replica a moment behind; `leader`
        reads through the stream's leader instead (a request per event), for a writer that
        must see the latest events before it decides again.
        """
        if leader:
            return await self._read_from_leader(subject_filter)
        out: list[RawEvent] = []
        seq = 1
        while True:
            batch, more = await self._direct_batch(subject_filter, seq)
            out.extend(batch)
            if not more or not batch:
                return out
            seq = batch[-1].seq + 1

    async def _read_from_leader(self, subject_filter: str) -> list[RawEvent]:
        out: list[RawEvent] = []
        seq = 0
        while True:
            try:
                msg = await self._js.get_msg(
                    self.stream, seq + 1, subject=subject_filter, next=True
                )
            except NotFoundError:
                return out
            seq = int(msg.seq or 0)
            out.append(RawEvent(seq, msg.subject or "", msg.data or b""))

    async def _direct_batch(self, subject_filter: str, seq: int) -> tuple[list[RawEvent], bool]:
        """Messages from `seq` on the filter's subjects; True when more follow the batch."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        try:
            request = {"seq": seq, "next_by_subj": subject_filter, "batch": _DIRECT_BATCH}
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{self.stream}", msgspec.json.encode(request), reply=inbox
            )
            out: list[RawEvent] = []
            while True:
                msg = await sub.next_msg(timeout=_PUBLISH_TIMEOUT_S)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is None:
                    out.append(
                        RawEvent(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data)
                    )
                    if "Nats-Num-Pending" not in headers:
                        # A server before 2.11 ignores "batch" and answers with one message
                        # and no end marker: page one message at a time.
                        return out, True
                elif status == "204":  # end of the batch
                    return out, int(headers.get("Nats-Num-Pending", "0")) > 0
                elif status == "404":  # nothing (more) on these subjects
                    return out, False
                else:
                    detail = headers.get("Description", "")
                    raise ReadError(f"reading {subject_filter} failed: {status} {detail}")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def last_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        info = await self._js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def last_seq_of(self, subject_filter: str) -> int:
        """The last sequence among subjects matching the filter (0 when none)."""
        last = await self._last_of(subject_filter)
        return 0 if last is None else last[0]

    async def read(self, from_seq: int = 1, max_queued: int = 50_000) -> EventReader:
        """An ordered reader from `from_seq`; it also delivers events appended later."""
        reader = EventReader(max_queued)
        await reader.start(self._js, self.stream, from_seq)
        return reader

    async def read_all(self, from_seq: int = 1, until_seq: int | None = None) -> list[RawEvent]:
        """Every event from `from_seq` up to `until_seq` (default: the last one now)."""
        until = await self.last_seq() if until_seq is None else until_seq
        out: list[RawEvent] = []
        if until < from_seq:
            return out
        reader = await self.read(from_seq)
        try:
            while not out or out[-1].seq < until:
                out.extend(await reader.next_batch(10_000, timeout_s=10.0))
        finally:
            await reader.close()
        return [e for e in out if e.seq <= until]


def _raw_event(seq: int, msg: Any) -> RawEvent:
    return RawEvent(seq, msg.subject, msg.data)


class EventReader:
    """Events read in order by a pull consumer of the reader's own (`events.stream_reader`),
    handed out in batches."""

    def __init__(self, max_queued: int) -> None:
        self._max_queued = max_queued
        self._reader: StreamReader[RawEvent] | None = None
        self._queue: asyncio.Queue[RawEvent] = asyncio.Queue(max_queued)

    async def start(self, js: JetStreamContext, stream: str, from_seq: int) -> None:
        reader = StreamReader(js, stream, EVENTS_ALL, from_seq, _raw_event, self._max_queued)
        await reader.start()
        self._reader, self._queue = reader, reader.queue

    async def next_batch(self, max_n: int, timeout_s: float | None = None) -> list[RawEvent]:
        """Wait for at least one event (up to the timeout), then take what is there."""
        batch: list[RawEvent] = []
        try:
            batch.append(await asyncio.wait_for(self._queue.get(), timeout_s))
        except TimeoutError:
            return batch
        batch.extend(self.take_ready(max_n - 1))
        return batch

    def take_ready(self, max_n: int) -> list[RawEvent]:
        """What is queued now, up to `max_n` events, without waiting."""
        batch: list[RawEvent] = []
        while len(batch) < max_n:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            # Bounded: a connection that is going away must not hold up a shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.close(), 2.0)
