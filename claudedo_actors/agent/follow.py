"""Reading a run's lines back from the output stream (`claudedo log --follow`, the board)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import msgspec

import events as ev
from claudedo_actors.agent.run_output import END_HEADER, LINE_HEADER, PART_HEADER
from events.log import OUTPUT_STREAM


async def follow_output(
    url: str,
    task_id: str,
    run_number: int,
    on_line: Callable[[bytes], None],
    idle_timeout_s: float | None = None,
) -> bool:
    """Deliver the run's lines from its first; returns True once its end marker was seen.

    With `idle_timeout_s`, stops after that long without a message (a finished run whose
    messages aged out of the stream, or a snapshot of a running one).
    """
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            ev.output_subject(task_id, run_number), stream=OUTPUT_STREAM, ordered_consumer=True
        )
        parts: list[bytes] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s or 3600)
            except TimeoutError:
                if idle_timeout_s is not None:
                    return False
                continue
            headers = msg.headers or {}
            if END_HEADER in headers:
                return True
            if PART_HEADER in headers:
                index, total = (int(x) for x in headers[PART_HEADER].split("/"))
                parts = [] if index == 1 else parts
                parts.append(msg.data)
                if index == total:
                    on_line(b"".join(parts))
                    parts = []
            elif LINE_HEADER in headers:
                on_line(msg.data)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


async def last_lines(js: Any, subjects: list[str]) -> dict[str, bytes | None]:
    """The latest published line of each output subject (None: nothing, or only the end)."""
    out: dict[str, bytes | None] = {}
    for subject in subjects:
        try:
            msg = await js.get_last_msg(OUTPUT_STREAM, subject)
        except Exception:
            out[subject] = None
            continue
        headers = msg.headers or {}
        out[subject] = None if END_HEADER in headers else msg.data
    return out


class _Block(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    name: str | None = None
    input: Any = None


class _Message(msgspec.Struct):
    content: list[_Block] | str | None = None


class _Line(msgspec.Struct):
    type: str | None = None
    subtype: str | None = None
    message: _Message | None = None
    result: str | None = None


def summarize(line: bytes | None, width: int = 100) -> str:
    """One short, human line for a stream-json line: text said, tool used, result."""
    if not line:
        return ""
    try:
        parsed = msgspec.json.decode(line[:200_000], type=_Line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _cut(line.decode(errors="replace"), width)
    text = parsed.type or "?"
    if parsed.type == "result":
        text = f"result: {parsed.result or parsed.subtype or ''}"
    elif parsed.message is not None and isinstance(parsed.message.content, list):
        for block in parsed.message.content:
            if block.type == "text" and block.text:
                text = block.text
            elif block.type == "tool_use":
                args = msgspec.json.encode(block.input).decode() if block.input else ""
                text = f"{block.name}: {args}"
    elif parsed.subtype:
        text = f"{parsed.type}/{parsed.subtype}"
    return _cut(text, width)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
