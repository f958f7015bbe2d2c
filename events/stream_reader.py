"""Reading a stream in order, from any sequence on, by pull requests (decision 0022).

A reader makes an ephemeral pull consumer of its own (no acks, kept in memory) and asks it for
batches; each answer arrives on the reader's inbox. Unlike a push consumer this works through
an account's import of the JetStream API, which is how operators and readers reach the log:
what the server sends goes to the inbox of the connection that asked, in the asker's account.

The reader keeps the stream sequence after the last message it handed on. When the consumer
is lost (the server restarted, a cluster moved its leader, the connection dropped, the
consumer sat idle past its threshold) or a consumer sequence is skipped, it makes a new
consumer from that sequence: nothing is delivered twice or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.nuid import NUID

log = logging.getLogger(__name__)

T = TypeVar("T")

_BATCH = 1_000  # messages one pull request asks for (fewer when the queue has less room)
_EXPIRES_S = 5.0  # how long one pull request waits for messages
_HEARTBEAT_S = 1.0  # the server's idle heartbeat while a request waits
_LOST_AFTER_S = 3 * _HEARTBEAT_S  # silence after which the consumer counts as lost
_INACTIVE_S = 30.0  # the server removes a consumer nobody asked for that long
_RETRY_MAX_S = 2.0
_nuid = NUID()


def stream_sequences(reply: str) -> tuple[int, int]:
    """The stream and consumer sequences in a JetStream message's ack subject (both forms:
    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` and the one with
    a domain and an account hash before the stream, and a random token at the end)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6])
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[8])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


class StreamReader(Generic[T]):
    """Messages of `stream` matching `subject_filter` from `from_seq` on, in order, queued
    (bounded) for the owner as `make(stream_seq, msg)` builds them."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject_filter: str,
        from_seq: int,
        make: Callable[[int, Any], T],
        max_queued: int = 50_000,
        queue: asyncio.Queue[T] | None = None,
    ) -> None:
        self._js = js
        self._nc = js._nc
        self._stream = stream
        self._filter = subject_filter
        self._make = make
        self.next_seq = max(1, from_seq)
        # Bounded: when the owner falls behind, the callback waits and no more is asked for.
        # Two readers may share one queue (a run's output and its end event).
        self.queue: asyncio.Queue[T] = asyncio.Queue(max_queued) if queue is None else queue
        self._pump_task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._consumer = ""
        self._expect_cseq = 1
        self._left = 0  # messages the open request may still deliver
        self._answered = asyncio.Event()  # the open request is fulfilled, expired or failed
        self._lost = False
        self._heard = 0.0  # monotonic time of the last message or heartbeat
        self._waiting_for_room = False
        # Python 3.11's wait_for can swallow a cancellation that meets its own wake-up, so
        # the pump also stops on this flag.
        self._closing = False

    async def start(self) -> None:
        await self._open()  # the first consumer's errors (no such stream, refused) are the caller's
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _open(self) -> None:
        await self._drop_sub()
        name = _nuid.next().decode()
        config = js_api.ConsumerConfig(
            name=name,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq,
            ack_policy=js_api.AckPolicy.NONE,
            filter_subject=self._filter,
            inactive_threshold=_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        await self._js.add_consumer(self._stream, config)
        self._consumer = name
        self._expect_cseq = 1
        self._lost = False
        self._sub = await self._nc.subscribe(self._nc.new_inbox(), cb=self._on_msg)

    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 2.0)

    async def _pump(self) -> None:
        failures = 0
        while not self._closing:
            try:
                if self._sub is None:
                    await self._open()
                await self._pull_until_lost()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server away, reconnecting: retry
                failures += 1
                log.debug("reading %s from %d: %s", self._stream, self.next_seq, exc)
                await self._drop_sub()
                await asyncio.sleep(min(0.05 * 2**failures, _RETRY_MAX_S))

    async def _pull_until_lost(self) -> None:
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}"
        while not self._lost and not self._closing:
            # When the owner is behind, the callback waits on the full queue and a request of
            # one message keeps the consumer asked for.
            self._left = max(1, min(_BATCH, self.queue.maxsize - self.queue.qsize()))
            self._answered.clear()
            request = {
                "batch": self._left,
                "expires": int(_EXPIRES_S * 1e9),
                "idle_heartbeat": int(_HEARTBEAT_S * 1e9),
            }
            self._heard = time.monotonic()
            await self._nc.publish(subject, msgspec.json.encode(request), reply=self._sub.subject)
            while not self._answered.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._answered.wait(), _HEARTBEAT_S)
                if self._closing:
                    return
                silent = time.monotonic() - self._heard > _LOST_AFTER_S
                if silent and not self._waiting_for_room and not self._answered.is_set():
                    self._lost = True  # no message and no heartbeat: the consumer is gone
                    break
        await self._drop_sub()

    async def _on_msg(self, msg: Any) -> None:
        if self._sub is None or msg._sid != self._sub._id:
            return  # a late answer to a consumer given up
        self._heard = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is None:
            sseq, cseq = stream_sequences(msg.reply)
            if cseq != self._expect_cseq:
                self._lost = True  # a skipped message: start again from the last one handed on
                self._answered.set()
                return
            self._expect_cseq += 1
            item = self._make(sseq, msg)
            if self.queue.full():
                self._waiting_for_room = True  # heartbeats wait behind this callback meanwhile
                try:
                    await self.queue.put(item)
                finally:
                    self._waiting_for_room = False
                    self._heard = time.monotonic()
            else:
                self.queue.put_nowait(item)
            self.next_seq = sseq + 1
            self._left -= 1
            if self._left <= 0:
                self._answered.set()
        elif status == "100":
            return  # an idle heartbeat: the consumer is there
        elif status in ("404", "408"):
            self._answered.set()  # no messages now, or the request expired: ask again
        else:
            # 409: the consumer was deleted, its leader changed, too many waiting requests.
            log.debug("reading %s: %s %s", self._stream, status, headers.get("Description"))
            self._lost = True
            self._answered.set()

    async def close(self) -> None:
        self._closing = True
        task, self._pump_task = self._pump_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._drop_sub()
