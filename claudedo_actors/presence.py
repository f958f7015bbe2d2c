"""Which nodes are alive: heartbeats in a JetStream key-value bucket.

Every node puts its entry (`nodes.<node id>`: id, host, pid, slots) every `beat_s` seconds in
the `claudedo_nodes` bucket, whose entries expire after the lease, and watches the bucket.
A node is alive while this node has seen one of its beats within the lease, measured on this
node's own monotonic clock (no clock of another machine is trusted). A node that stops cleanly
deletes its entry, so the others know at once.

A node that has just started has not seen everyone yet: until it has watched for one lease it
is not `settled`, and it treats every node it was not told about as possibly alive.
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


def beat_interval() -> float:
    """Seconds between beats: CLAUDEDO_HEARTBEAT_S, else 2."""
    raw = os.environ.get(BEAT_ENV)
    if not raw:
        return DEFAULT_BEAT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.05 <= value <= 600:
        raise ValueError(f"{BEAT_ENV} must be a number of seconds from 0.05 to 600, not {raw!r}")
    return value


class Presence:
    """Runs on the bridge's loop; `alive()` and `settled()` may be called from any thread."""

    def __init__(
        self, nc: Client, node_id: str, slots: int, on_change: Callable[[], None], beat_s: float
    ) -> None:
        self._nc = nc
        self.node_id = node_id
        self.beat_s = beat_s
        self.lease_s = beat_s * LEASE_BEATS
        self._entry = json.dumps(
            {"node_id": node_id, "host": socket.gethostname(), "pid": os.getpid(), "slots": slots}
        ).encode()
        self._slots = slots
        self._on_change = on_change
        self._seen: dict[str, tuple[float, int]] = {}  # node id -> (monotonic time, slots)
        self._started = time.monotonic()
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
                    js_api.KeyValueConfig(bucket=BUCKET, history=1, ttl=self.lease_s)
                )
            except Exception:  # another node made it meanwhile, with its own lease
                self._kv = await js.key_value(BUCKET)
        await self._kv.put(self.node_id, self._entry)
        self._seen[self.node_id] = (time.monotonic(), self._slots)
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT)
        self._sub = await js.subscribe(
            f"$KV.{BUCKET}.>",
            stream=f"KV_{BUCKET}",
            cb=self._on_msg,
            ordered_consumer=True,
            config=config,
        )
        self._task = asyncio.create_task(self._beat(), name="presence")

    async def _on_msg(self, msg: Any) -> None:
        node_id = msg.subject[len(f"$KV.{BUCKET}.") :]
        operation = (msg.headers or {}).get("KV-Operation")
        if operation in ("DEL", "PURGE"):
            self._seen.pop(node_id, None)
        else:
            try:
                slots = int(json.loads(msg.data)["slots"])
            except (ValueError, KeyError, TypeError):
                return  # not an entry a node wrote
            self._seen[node_id] = (time.monotonic(), slots)
        self._notify()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)  # the heartbeat's period
            try:
                await self._kv.put(self.node_id, self._entry)
            except Exception as exc:  # NATS away for a moment: the next beat tries again
                log.warning("heartbeat not sent: %s", exc)
            self._notify()

    def _notify(self) -> None:
        alive, settled = self.alive(), self.settled()
        if alive != self._last_alive or settled != self._was_settled:
            gone = self._last_alive - alive
            for node in sorted(gone):
                if node in self._seen:  # no beat within the lease
                    log.warning("node %s lost: no heartbeat for %.1fs", node, self.lease_s)
                else:  # it deleted its entry
                    log.info("node %s left", node)
            self._last_alive, self._was_settled = alive, settled
            self._on_change()

    def alive(self) -> frozenset[str]:
        """Nodes with slots whose beat this node saw within the lease (itself included)."""
        now = time.monotonic()
        return frozenset(
            node
            for node, (at, slots) in list(self._seen.items())
            if slots > 0 and (node == self.node_id or now - at <= self.lease_s)
        )

    def settled(self) -> bool:
        """True once this node has watched for a whole lease: a node it has not heard of by
        then is not alive."""
        return time.monotonic() - self._started > self.lease_s

    def may_be_alive(self, node_id: str) -> bool:
        """Whether a node may still come for its tasks (alive, or not known dead yet)."""
        return node_id in self.alive() or not self.settled()

    def nodes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"node_id": node, "slots": slots, "last_beat_s": round(now - at, 1)}
            for node, (at, slots) in sorted(self._seen.items())
            if now - at <= self.lease_s or node == self.node_id
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
