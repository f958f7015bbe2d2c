"""What makes the board live: the projection's progress, handed from the node's loop to the
pages' Server-Sent Events streams on the web server's loop (decision 0025).

Each stream waits for the projection to pass the last sequence it told its page about; then
it sends one `changed` event with the new sequence as its id, and the page fetches what it
shows again. Events that come while a page fetches are folded into the next one, so a busy
node sends at most one event per batch the projector applies, whatever the page's speed. A
page that reconnects (a node restart, a network drop) sends the last id it saw and gets one
event at once if anything changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

# A comment line now and then keeps proxies and browsers from closing a quiet stream.
KEEPALIVE_S = 15.0


class Changes:
    """The projection's checkpoint, and the streams waiting for it to move."""

    def __init__(self) -> None:
        self.seq = 0
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.closed = False

    def advanced(self, seq: int) -> None:
        """The projection reached `seq` (called on the node's loop, or any thread)."""
        with self._lock:
            if seq <= self.seq:
                return
            self.seq = seq
            waiting = list(self._waiting)
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def close(self) -> None:
        self.closed = True
        self.advanced(self.seq + 1)

    async def stream(self, after: int) -> AsyncIterator[str]:
        """The text of an event stream for a page that saw sequence `after`."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiting.add(entry)
        try:
            yield "retry: 1000\n\n"
            while not self.closed:
                if self.seq > after:
                    after = self.seq
                    yield f"id: {after}\nevent: changed\ndata: {after}\n\n"
                event.clear()
                if self.seq > after or self.closed:
                    continue
                try:
                    await asyncio.wait_for(event.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            with self._lock:
                self._waiting.discard(entry)
