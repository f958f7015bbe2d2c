"""The synchronous facade actors use to reach the log and NATS through the bridge's loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from nats.js import api as js_api

import events as ev
from claudedo_actors.node.bridge import NatsBridge
from projections import ListState, TaskState, fold_list, fold_task

T = TypeVar("T")

log = logging.getLogger("claudedo.facade")

# (subject, payload, headers) of one output message.
_OutMsg = tuple[str, bytes, dict[str, str]]
# Live output waiting for NATS, at most: past it, new lines are not published live (the
# run's NDJSON file keeps every line) and the agent is never held up.
OUTPUT_BUFFER_BYTES = 64 * 1024 * 1024


class LogFacade:
    """Blocking calls for actor threads; nothing here may be called on the loop itself."""

    def __init__(self, bridge: NatsBridge) -> None:
        assert bridge.log is not None and bridge.nc is not None
        self._bridge = bridge
        self._log = bridge.log
        self._nc = bridge.nc
        self._out: asyncio.Queue[_OutMsg] | None = None
        self._out_bytes = 0  # payload bytes queued (touched on the loop only)
        self.output_dropped = 0  # lines not published live because the buffer was full
        self.closing = False  # set by the node as it stops
        self._out_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._bridge.connected

    @property
    def max_payload(self) -> int:
        return int(self._nc.max_payload or 1024 * 1024)

    def append(
        self, envelopes: Sequence[ev.Envelope], expected_seq: int | None, guard: str | None = None
    ) -> list[int]:
        return self._bridge.call(self._log.append(envelopes, expected_seq, guard), timeout_s=60)

    def load_task(self, task_id: str, leader: bool = False) -> tuple[TaskState | None, int]:
        """The task folded from its own events in the log, and its last sequence.

        `leader`: read through the stream's leader (see EventLog.read_aggregate), for a writer
        deciding again after a conflict; the default may lag a moment in a cluster.
        """
        return self._load("task", task_id, fold_task, leader)

    def load_list(self, list_id: str) -> ListState | None:
        return self._load("list", list_id, fold_list)[0]

    def _load(
        self,
        aggregate: str,
        aggregate_id: str,
        fold: Callable[[Any, Any, int], T],
        leader: bool = False,
    ) -> tuple[T | None, int]:
        subjects = ev.aggregate_filter(aggregate, aggregate_id)
        raws = self._bridge.call(self._log.read_aggregate(subjects, leader), timeout_s=60)
        state: T | None = None
        for raw in raws:
            try:
                state = fold(state, ev.decode(raw.data), raw.seq)
            except (ev.DecodeError, ValueError):
                continue  # skipped like the projector skips it
        return state, raws[-1].seq if raws else 0

    def watch(self, subject_filter: str, on_event: Callable[[str, int], None]) -> None:
        """Tell `on_event(subject, stream sequence)` of each new event on the filter's subjects."""

        async def start() -> None:
            js = self._nc.jetstream()

            async def deliver(msg: Any) -> None:
                on_event(msg.subject, msg.metadata.sequence.stream)

            config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW)
            await js.subscribe(
                subject_filter, stream=self._log.stream, cb=deliver, ordered_consumer=True,
                config=config,
            )  # fmt: skip

        self._bridge.call(start(), timeout_s=30)

    def last_seq(self) -> int:
        return self._bridge.call(self._log.last_seq(), timeout_s=30)

    # --- agent output: ordered, never blocking the caller ------------------------------

    def start_output(self) -> None:
        async def start() -> None:
            self._out = asyncio.Queue()
            self._out_task = asyncio.create_task(self._publish_output(), name="output")

        self._bridge.call(start())

    def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        """Queue one output message; it is published in order by the loop. Never blocks:
        past OUTPUT_BUFFER_BYTES waiting, the message is dropped (and counted)."""
        if self._out is not None:
            self._bridge.loop.call_soon_threadsafe(self._enqueue, (subject, payload, headers))

    def _enqueue(self, msg: _OutMsg) -> None:
        out = self._out
        if out is None:
            return
        if self._out_bytes + len(msg[1]) > OUTPUT_BUFFER_BYTES:
            if not self.output_dropped % 1000:
                log.warning(
                    "live output buffer full (NATS slow or away): lines go to the run logs "
                    "only (%d dropped so far)",
                    self.output_dropped + 1,
                )
            self.output_dropped += 1
            return
        self._out_bytes += len(msg[1])
        out.put_nowait(msg)

    async def _publish_output(self) -> None:
        assert self._out is not None
        while True:
            subject, payload, headers = await self._out.get()
            self._out_bytes -= len(payload)
            try:
                # Plain publish: the output stream stores it; the NDJSON file is the record.
                await self._nc.publish(subject, payload, headers=headers)
            except Exception as exc:  # a disconnected moment loses live lines, not the file
                log.warning("output line not published on %s: %s", subject, exc)
            finally:
                self._out.task_done()

    def stop_output(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (bounded), then stop."""

        async def stop() -> None:
            out, task = self._out, self._out_task
            if out is None or task is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(out.join(), timeout_s)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
            self._out = None

        self._bridge.call(stop(), timeout_s=timeout_s + 2)
