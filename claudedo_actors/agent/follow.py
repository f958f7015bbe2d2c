"""Reading a run's lines back from the output stream (`claudedo log --follow`, the board)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import events as ev
from claudedo_actors.agent import transcript
from claudedo_actors.agent.run_output import END_HEADER, LINE_HEADER, PART_HEADER
from events.credentials import Credential, connect_options
from events.log import OUTPUT_STREAM, STREAM
from events.stream_reader import StreamReader


async def follow_output(
    url: str,
    task_id: str,
    run_number: int,
    on_line: Callable[[bytes], None],
    idle_timeout_s: float | None = None,
    credential: Credential | None = None,
) -> bool:
    """Deliver the run's lines from its first; returns True once the run is over: its end
    marker was seen, or its RunFinished is in the log (a run settled by recovery after its
    node died has no end marker) and every line published before it was delivered.

    With `idle_timeout_s`, stops after that long without a message (a finished run whose
    messages aged out of the stream, or a snapshot of a running one).
    """
    import nats

    login = connect_options(url, credential)
    nc = await nats.connect(url, **login, connect_timeout=5, max_reconnect_attempts=3)
    readers: list[StreamReader[tuple[str, int, Any]]] = []
    try:
        js = nc.jetstream()
        inbox: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue(10_000)
        subject = ev.output_subject(task_id, run_number)
        finished = ev.event_subject("task", task_id, "RunFinished")
        readers += [
            StreamReader(js, OUTPUT_STREAM, subject, 1, _tagged("line"), queue=inbox),
            StreamReader(js, STREAM, finished, 1, _tagged("event"), queue=inbox),
        ]
        for reader in readers:
            await reader.start()
        parts: list[bytes] = []
        delivered = 0  # stream sequence of the last output message handled
        last_before_end: int | None = None  # set once the run is known finished
        while last_before_end is None or delivered < last_before_end:
            try:
                kind, seq, msg = await asyncio.wait_for(inbox.get(), idle_timeout_s or 3600)
            except TimeoutError:
                if idle_timeout_s is not None:
                    return False
                continue
            if kind == "event":
                if _finishes(msg.data, run_number):
                    last_before_end = await _last_seq(js, subject)
                continue
            delivered = seq
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
        return True
    finally:
        for reader in readers:
            await reader.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


def _tagged(kind: str) -> Callable[[int, Any], tuple[str, int, Any]]:
    def make(seq: int, msg: Any) -> tuple[str, int, Any]:
        return kind, seq, msg

    return make


def _finishes(data: bytes, run_number: int) -> bool:
    """Whether an event message is the RunFinished of run `run_number`."""
    try:
        env = ev.decode(data)
    except ev.DecodeError:
        return False
    return isinstance(env.event, ev.RunFinished) and env.event.run_number == run_number


async def _last_seq(js: Any, subject: str) -> int:
    """The stream sequence of the subject's last output message (0: none)."""
    try:
        msg = await js.get_last_msg(OUTPUT_STREAM, subject)
    except Exception:
        return 0
    return int(msg.seq)


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


def summarize(line: bytes | None, width: int = 100) -> str:
    """What a stream-json line says, in one short line: the agent's text, the tool it called,
    a result (agent/transcript.py), never the line's type."""
    if not line:
        return ""
    found = transcript.entries(line)
    return _cut(transcript.plain(found[-1]), width) if found else ""


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
