"""The replies of a node that its clients are pulling, message by message (decision 0016).

The format of the messages is pages.py's; here the node keeps each reply that has more to
send under a token until its client asks for the next message, or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable

import msgspec

from claudedo_actors.api.pages import CONTINUED, NEXT, Message
from events.errors import ClaudeDoError

log = logging.getLogger("claudedo.api")
_encode = msgspec.json.encode


class ReplyStreams:
    """The replies of this node that clients are pulling, by token.

    `publish(subject, payload, headers)` sends a message. A reply nobody pulled for `idle_s`
    is dropped (its client went away), with whatever it still held."""

    def __init__(
        self,
        publish: Callable[[str, bytes, dict[str, str]], Awaitable[None]],
        prefix: str,
        idle_s: float,
    ) -> None:
        self._publish = publish
        self.prefix = prefix
        self._idle_s = idle_s
        self._streams: dict[str, _Stream] = {}
        self._closing: set[asyncio.Future[None]] = set()

    async def send(self, reply_to: str, items: AsyncGenerator[Message, None]) -> None:
        """Send the first message of a reply; keep the rest for the client to pull."""
        stream = _Stream(items)
        await stream.prime()
        token = secrets.token_hex(8)
        await self._send(reply_to, token, stream)

    async def on_next(self, reply_to: str, token: str) -> None:
        """The client asks for the next message of reply `token`."""
        stream = self._streams.get(token)
        if stream is None:
            error = {
                "error": {
                    "code": "not_found",
                    "message": f"this reply is no longer held (unasked for {self._idle_s:g}s); "
                    "ask again",
                }
            }
            await self._publish(reply_to, _encode(error), {})
            return
        async with stream.lock:
            await self._send(reply_to, token, stream)

    async def _send(self, reply_to: str, token: str, stream: _Stream) -> None:
        message, more = await stream.take()
        headers: dict[str, str] = {}
        if message.continued:
            headers[CONTINUED] = "1"
        if more:
            headers[NEXT] = f"{self.prefix}.{token}"
            self._streams[token] = stream
            stream.expire_in(self._idle_s, lambda: self.drop(token))
        else:
            self._streams.pop(token, None)
            await stream.close()
        await self._publish(reply_to, message.payload, headers)

    def drop(self, token: str) -> None:
        stream = self._streams.pop(token, None)
        if stream is not None:
            closing = asyncio.ensure_future(stream.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for token in list(self._streams):
            stream = self._streams.pop(token)
            await stream.close()


class _Stream:
    """A reply's messages, read one ahead (whether more follow decides NEXT), and the one
    after that read while the client handles the message sent."""

    def __init__(self, items: AsyncGenerator[Message, None]) -> None:
        self._items = items
        self._ready: Message | None = None
        self._ahead: asyncio.Task[Message | None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False
        self.lock = asyncio.Lock()

    async def _pull(self) -> Message | None:
        """The next message; an error while reading the reply ends it with an error document."""
        if self._failed:
            return None
        try:
            return await anext(self._items, None)
        except ClaudeDoError as exc:
            error = {"code": exc.code, "message": " ".join(exc.message.split())[:500]}
        except Exception as exc:
            log.exception("reading a reply failed")
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            error = {"code": "internal", "message": f"internal error: {detail}"}
        self._failed = True
        return Message(_encode({"error": error}))

    async def prime(self) -> None:
        self._ready = await self._pull()
        if self._ready is not None:
            self._ahead = asyncio.ensure_future(self._pull())

    async def take(self) -> tuple[Message, bool]:
        """The next message, and whether another follows it."""
        message = self._ready
        assert message is not None, "a stream is dropped after its last message"
        following = await self._ahead if self._ahead is not None else None
        self._ready, self._ahead = following, None
        if following is not None:
            self._ahead = asyncio.ensure_future(self._pull())
        return message, following is not None

    def expire_in(self, seconds: float, drop: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, drop)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._ahead is not None:
            self._ahead.cancel()
            with contextlib.suppress(BaseException):
                await self._ahead
        with contextlib.suppress(Exception):
            await self._items.aclose()
