"""Replies larger than a NATS message: documents of pages, chunks, and how a client joins them.

A reply is a sequence of JSON documents, each `{"ok": part}` or `{"error": ...}`. A listing
(tasks, audit, runs, sql) is one document per page of rows, so a client can print a page as
it arrives; any other reply is one document. A document larger than a message is split into
chunks: every chunk but its last carries CONTINUED. Every message but the last of the reply
carries NEXT, the subject the client requests (with an empty body) for the next message: the
client pulls, so a slow reader never makes the server buffer a whole listing for it. See
docs/architecture.md ("Replies") and docs/decisions/0016-large-replies.md. The node holds
the replies being pulled in reply_streams.py.

Import-light (msgspec only, no asyncio): the CLI uses the joining half.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

NEXT = "Claudedo-Next"
CONTINUED = "Claudedo-Continued"
# Room left in a message for its headers (NEXT's subject is under 100 bytes).
HEADROOM = 1024
# Rows a listing reads from the projection at a time: one short projector call each.
PAGE_ROWS = 1000

_encode = msgspec.json.encode


@dataclass
class Pages:
    """A listing, page by page: `pages` yields lists of JSON-ready rows, in order.

    With `columns` (sql), each document is `{"columns": columns, "rows": page}`; otherwise it
    is the page itself, a JSON array, and the pages joined are the listing."""

    pages: AsyncIterator[list[Any]]
    columns: list[str] | None = field(default=None)

    @staticmethod
    def of(rows: list[Any], columns: list[str] | None = None) -> Pages:
        """Rows already read, as one page."""

        async def one() -> AsyncIterator[list[Any]]:
            yield rows

        return Pages(one(), columns)


@dataclass(frozen=True)
class Message:
    """One message of a reply: a payload, and whether the document goes on in the next."""

    payload: bytes
    continued: bool = False


async def messages(value: Any, budget: int) -> AsyncGenerator[Message, None]:
    """The messages of a reply: `value` is a `{"ok"|"error": ...}` dict or Pages, each message
    at most `budget` bytes. Rows of a page share a document while they fit; a document that
    does not fit one message is chunked."""
    if not isinstance(value, Pages):
        for message in _chunks(_encode(value), budget):
            yield message
        return
    head = b'{"ok":['
    tail = b"]}"
    if value.columns is not None:
        head = b'{"ok":{"columns":' + _encode(value.columns) + b',"rows":['
        tail = b"]}}"
    sent = False
    try:
        async for message in _page_messages(value.pages, head, tail, budget):
            sent = True
            yield message
    finally:
        close = getattr(value.pages, "aclose", None)
        if close is not None:
            await close()
    if not sent:
        yield Message(head + tail)


async def _page_messages(
    pages: AsyncIterator[list[Any]], head: bytes, tail: bytes, budget: int
) -> AsyncGenerator[Message, None]:
    fixed = len(head) + len(tail)
    async for page in pages:
        rows: list[bytes] = []
        size = fixed
        for row in page:
            data = _encode(row)
            if rows and size + len(data) + 1 > budget:
                for message in _chunks(head + b",".join(rows) + tail, budget):
                    yield message
                rows, size = [], fixed
            rows.append(data)
            size += len(data) + 1
        if rows:
            for message in _chunks(head + b",".join(rows) + tail, budget):
                yield message


class TooLarge(Exception):
    """A reply that needs more than one message, for a client that did not ask for pages."""


async def single(value: Any, budget: int) -> bytes:
    """The one message of a reply to a client that reads one (`paged` false): a listing's
    pages joined in one document.

    Raises TooLarge as soon as the document grows past `budget` (a listing is not read to its
    end for that)."""
    if not isinstance(value, Pages):
        data = _encode(value)
        if len(data) > budget:
            raise TooLarge()
        return data
    rows: list[bytes] = []
    size = 0
    try:
        async for page in value.pages:
            for row in page:
                rows.append(_encode(row))
                size += len(rows[-1]) + 1
                if size > budget:
                    raise TooLarge()
    finally:
        close = getattr(value.pages, "aclose", None)
        if close is not None:
            await close()
    joined = b"[" + b",".join(rows) + b"]"
    if value.columns is not None:
        data = b'{"ok":{"columns":' + _encode(value.columns) + b',"rows":' + joined + b"}}"
    else:
        data = b'{"ok":' + joined + b"}"
    if len(data) > budget:
        raise TooLarge()
    return data


def _chunks(document: bytes, budget: int) -> Iterator[Message]:
    if len(document) <= budget:
        yield Message(document)
        return
    view = memoryview(document)
    for start in range(0, len(document), budget):
        yield Message(bytes(view[start : start + budget]), start + budget < len(document))


def join(parts: Iterable[Any]) -> Any:
    """The reply's value from its documents' `ok` parts: one part is the value; the pages of
    a listing are joined (arrays concatenated; sql's `rows` concatenated under its columns)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, list) for p in parts):
        return [row for part in parts for row in part]
    if parts and all(isinstance(p, dict) and "rows" in p for p in parts):
        return {**parts[0], "rows": [row for part in parts for row in part["rows"]]}
    raise ValueError("the reply's parts are not pages of one listing")
