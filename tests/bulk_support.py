"""Many tasks, fast: events published straight into a node's log, as its API writes them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import nats

import events as ev
from tests.conftest import NodeProcess, home_url, wait_until

ORIGIN = ev.Origin(node_id="bulk", correlation_id="bulk", actor="user:bulk")


def nats_url(node: NodeProcess) -> str:
    return home_url(node.home)


def publish(node: NodeProcess, envelopes: Iterable[ev.Envelope], batch: int = 2000) -> None:
    """Append the envelopes to the node's log, in order, acks gathered a batch at a time."""

    async def run() -> None:
        nc = await nats.connect(nats_url(node))
        js = nc.jetstream()
        pending: list[Any] = []
        for env in envelopes:
            pending.append(await js.publish_async(env.subject, ev.encode(env)))
            if len(pending) >= batch:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        await nc.close()

    asyncio.run(run())


def add_tasks(
    node: NodeProcess, count: int, description: Callable[[int], str] = lambda i: ""
) -> str:
    """A list `bulk` with `count` draft tasks titled `task <i>`; returns the list's id."""
    list_id = ev.new_aggregate_id()

    def envelopes() -> Iterable[ev.Envelope]:
        yield ev.envelop(ev.ListCreated(name="bulk"), list_id, ORIGIN)
        for i in range(count):
            created = ev.TaskCreated(list_id=list_id, title=f"task {i}", description=description(i))
            yield ev.envelop(created, ev.new_aggregate_id(), ORIGIN)

    publish(node, envelopes())
    wait_for_projection(node)
    return list_id


def wait_for_projection(node: NodeProcess, timeout_s: float = 300) -> None:
    def caught_up() -> bool:
        info = node.ok("info")
        return bool(info["last_seq"] and info["checkpoint_seq"] == info["last_seq"])

    wait_until(caught_up, timeout_s, "the projection to hold the log")


class Counter:
    """Counts the messages on a subject filter, from a thread of its own (a real subscriber).

    `sync()` returns once every message the server routed to it before the call is counted:
    the server delivers a connection's messages in order, and a marker it publishes to
    itself comes after them."""

    def __init__(self, node: NodeProcess, subjects: str) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(node, subjects)))
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the subscriber did not start")

    async def _run(self, node: NodeProcess, subjects: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(nats_url(node))

        async def seen(msg: Any) -> None:
            with self._lock:
                self._count += 1

        await nc.subscribe(subjects, cb=seen)
        self._marker = nc.new_inbox()
        self._nc = nc
        self._marks: asyncio.Queue[None] = asyncio.Queue()

        async def marked(msg: Any) -> None:
            self._marks.put_nowait(None)

        await nc.subscribe(self._marker, cb=marked)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def sync(self) -> int:
        """The count once every message routed to the counter before this call is in it."""

        async def mark() -> None:
            await self._nc.publish(self._marker, b"")
            await asyncio.wait_for(self._marks.get(), 30)

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(mark(), self._loop).result(60)
        return self.count

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
