"""Which nodes are alive: heartbeats in a JetStream key-value bucket.

Every node puts its entry (`<node id>`: id, host, pid, slots, beat period) in the
`claudedo_nodes` bucket every `beat_s` seconds, and watches the bucket. The bucket's entries
expire after the longest lease, which only cleans up: a node is alive while this node has seen
one of its beats within the lease (five of that node's beats, or of this node's, whichever is
longer), timed on this node's own monotonic clock when the beat arrives; no clock of another
machine is compared. A node that stops cleanly deletes its entry, so the others know at once.

This node judges others only while it hears itself: its own beats must come back through the
watch. A node that has just started, or whose own beats stopped coming back for a lease (NATS
unreachable, the watch lost with a restarted server), is not `settled` until it has listened for
a whole lease again; until then it calls no node lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.js import api as js_api

log = logging.getLogger("claudedo.presence")

BUCKET = "claudedo_nodes"
BEAT_ENV = "CLAUDEDO_HEARTBEAT_S"
DEFAULT_BEAT_S = 2.0
LEASE_BEATS = 5  # a node missing this many beats in a row is lost
_BUCKET_TTL_S = 600.0  # cleanup only; liveness is judged by each node's own lease
_PREFIX = f"$KV.{BUCKET}."


def beat_interval() -> float:
    """Seconds between beats: CLAUDEDO_HEARTBEAT_S, else 2."""
    raw = os.environ.get(BEAT_ENV)
    if not raw:
        return DEFAULT_BEAT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.05 <= value <= 60:
        raise ValueError(f"{BEAT_ENV} must be a number of seconds from 0.05 to 60, not {raw!r}")
    return value


class _Seen:
    __slots__ = ("at", "lease_s", "slots")

    def __init__(self, at: float, slots: int, lease_s: float) -> None:
        self.at, self.slots, self.lease_s = at, slots, lease_s


class Presence:
    """Runs on the bridge's loop; `alive()`, `settled()` and `may_be_alive()` may be called
    from any thread (they read whole values the loop replaces)."""

    def __init__(
        self, nc: Client, node_id: str, slots: int, on_change: Callable[[], None], beat_s: float
    ) -> None:
        self._nc = nc
        self.node_id = node_id
        self.beat_s = beat_s
        self.lease_s = beat_s * LEASE_BEATS
        self._entry = json.dumps(
            {
                "node_id": node_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "slots": slots,
                "beat_s": beat_s,
            }
        ).encode()
        self._on_change = on_change
        self._seen: dict[str, _Seen] = {}
        self._listening_since = time.monotonic()
        self._own_echo_at: float | None = None  # when this node last heard its own beat
        self._kv: Any = None
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._last_alive: frozenset[str] = frozenset()
        self._was_settled = False

    async def start(self) -> None:
        js = self._nc.jetstream()
        try:
            self._kv = await js.key_value(BUCKET)
        except Exception:  # not there yet
            try:
                self._kv = await js.create_key_value(
                    js_api.KeyValueConfig(bucket=BUCKET, history=1, ttl=_BUCKET_TTL_S)
                )
            except Exception:  # another node made it meanwhile
                self._kv = await js.key_value(BUCKET)
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
            # A lost watch (a restarted server) is noticed and made again within two of these.
            idle_heartbeat=max(0.5, min(self.beat_s, 5.0)),
        )
        self._sub = await js.subscribe(
            f"{_PREFIX}>", stream=f"KV_{BUCKET}", cb=self._on_msg, ordered_consumer=True,
            config=config,
        )  # fmt: skip
        await self._put()
        self._task = asyncio.create_task(self._beat(), name="presence")

    async def _on_msg(self, msg: Any) -> None:
        node_id = msg.subject[len(_PREFIX) :]
        now = time.monotonic()
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            if node_id != self.node_id:
                self._seen.pop(node_id, None)
                log.info("node %s left", node_id)
        else:
            try:
                entry = json.loads(msg.data)
                slots = int(entry["slots"])
                their_lease = float(entry.get("beat_s", self.beat_s)) * LEASE_BEATS
            except (ValueError, KeyError, TypeError, AttributeError):
                return  # not an entry a node wrote
            if node_id == self.node_id:
                if self._own_echo_at is None or now - self._own_echo_at > self.lease_s:
                    # Deaf until now: listen for a whole lease before judging anyone.
                    self._listening_since = now
                self._own_echo_at = now
            self._seen[node_id] = _Seen(now, slots, max(their_lease, self.lease_s))
        self._notify()

    async def _put(self) -> None:
        try:
            await asyncio.wait_for(self._kv.put(self.node_id, self._entry), self.beat_s)
        except Exception as exc:  # NATS away for a moment: the next beat tries again
            log.warning("heartbeat not sent: %s", exc or type(exc).__name__)

    async def _beat(self) -> None:
        """A beat every `beat_s` on a fixed cadence; every lease the queue is told as well, so
        that it looks again for tasks of lost nodes even when nothing changed."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        beats = 0
        while True:
            next_at += self.beat_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # the heartbeat's cadence
            if loop.time() - next_at > self.beat_s:
                next_at = loop.time()  # the loop was held up: no burst of catch-up beats
            await self._put()
            beats += 1
            self._notify(force=beats % LEASE_BEATS == 0)

    def _notify(self, force: bool = False) -> None:
        alive, settled = self.alive(), self.settled()
        if force or alive != self._last_alive or settled != self._was_settled:
            if settled:
                for node in sorted(self._last_alive - alive):
                    if node in self._seen:
                        log.warning("node %s lost: no heartbeat within its lease", node)
            if settled and not self._was_settled:
                log.info("listening to %d node(s) with slots", len(alive))
            self._last_alive, self._was_settled = alive, settled
            self._on_change()

    def alive(self) -> frozenset[str]:
        """Nodes with slots whose beat this node saw within their lease (itself included)."""
        now = time.monotonic()
        return frozenset(
            node
            for node, seen in list(self._seen.items())
            if seen.slots > 0 and (node == self.node_id or now - seen.at <= seen.lease_s)
        )

    def settled(self) -> bool:
        """True while this node hears its own beats and has listened for a whole lease since
        it last could not: a node it has not heard of by then is not alive."""
        own, now = self._own_echo_at, time.monotonic()
        return (
            own is not None
            and now - own <= self.lease_s
            and now - self._listening_since > self.lease_s
        )

    def may_be_alive(self, node_id: str) -> bool:
        """Whether a node may still come for its tasks (alive, or not known to be lost)."""
        return not self.settled() or node_id in self.alive()

    def nodes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"node_id": node, "slots": seen.slots, "last_beat_s": round(now - seen.at, 1)}
            for node, seen in sorted(self._seen.items())
            if now - seen.at <= seen.lease_s or node == self.node_id
        ]

    async def stop(self) -> None:
        """Stop beating and delete this node's entry: the others know it left."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(self.node_id)
