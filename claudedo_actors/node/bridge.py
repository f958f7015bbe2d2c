"""The NATS bridge: one thread owns the asyncio loop and the connection; others call in."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client

from events.credentials import Credential
from events.log import EventLog

T = TypeVar("T")
log = logging.getLogger("claudedo.nats")


class NatsBridge:
    """Runs the event loop in a thread; `call` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="nats-bridge", daemon=True)
        self.nc: Client | None = None
        self.log: EventLog | None = None
        # When the connection was lost (None: connected), and who to tell it came back.
        self.disconnected_since: float | None = None
        self.on_reconnected: list[Callable[[], None]] = []
        self._connecting: concurrent.futures.Future[None] | None = None
        self._refused = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(
        self,
        url: str,
        name: str,
        timeout_s: float = 15.0,
        credential: Credential | None = None,
    ) -> None:
        """Connect as `credential`'s user (giving up after `timeout_s`); once connected,
        reconnect forever. A server that refuses the login fails the start at once."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._connect(url, name, credential), timeout_s), self.loop
        )
        self._connecting = future
        try:
            # A second deadline here: should the connect swallow wait_for's cancellation,
            # the start still ends.
            future.result(timeout_s + 5)
        except (TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            if self._refused:
                raise ConnectionRefusedError(self._refused) from None
            raise TimeoutError(f"no server answered within {timeout_s:.0f}s") from None
        finally:
            self._connecting = None

    async def _connect(self, url: str, name: str, credential: Credential | None) -> None:
        login = credential.nats_options() if credential is not None else {}
        self.nc = await nats.connect(
            url,
            name=name,
            **login,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=self._on_error,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
        )
        self.log = EventLog(self.nc.jetstream())

    async def _on_error(self, exc: Exception) -> None:
        """A server that refuses the login ends a start at once: retrying cannot help."""
        text = str(exc) or type(exc).__name__
        connecting = self._connecting
        if connecting is not None and "authorization violation" in text.lower():
            self._refused = "the server refused the credentials (authorization violation)"
            connecting.cancel()
            return
        await _log_error(exc)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _disconnected(self) -> None:
        if self.disconnected_since is None:
            self.disconnected_since = time.time()
            log.warning("lost the connection to NATS: no new runs until it is back")

    async def _reconnected(self) -> None:
        since, self.disconnected_since = self.disconnected_since, None
        away = f" after {time.time() - since:.1f} s" if since is not None else ""
        log.warning("reconnected to NATS%s", away)
        for listener in self.on_reconnected:
            try:
                listener()
            except Exception:
                log.exception("reconnect listener failed")

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Drain the connection, end every task left on the loop, then stop the loop."""
        if self._thread.is_alive():
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    self.call(self.nc.drain(), timeout_s=5)
            with contextlib.suppress(Exception):
                self.call(_cancel_others(), timeout_s=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


async def _cancel_others() -> None:
    """Cancel the loop's other tasks and wait for them (nats-py leaves a JetStream
    subscription's heartbeat and flow-control tasks running after a drain; a stopped loop
    would drop them pending, which asyncio reports as an error)."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


_last_error = ""


async def _log_error(exc: Exception) -> None:
    """Log a connection error once, not at every reconnect attempt."""
    global _last_error
    text = str(exc) or type(exc).__name__
    if text != _last_error:
        _last_error = text
        log.warning("nats: %s (retrying)", text)
