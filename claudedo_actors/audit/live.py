"""Reading a live node's log and output stream for the audit, as the operator or a reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from claudedo_actors.agent.run_output import END_HEADER, LINE_HEADER, PART_HEADER
from claudedo_actors.audit.verify import OutputSeen
from events.credentials import Credential, connect_options
from events.errors import Unavailable
from events.log import OUTPUT_STREAM, RawEvent
from events.replay import replay_batches
from events.subjects import OUTPUT_ALL
from events.wire import WireConnection, WireError


def last_seq(url: str, stream: str, credential: Credential | None) -> int:
    """The stream's last sequence now."""
    cred = credential
    login = (cred.user, cred.password, cred.inbox_prefix) if cred else (None, None, None)
    try:
        conn = WireConnection(url, 10.0, *login)
        try:
            reply = json.loads(conn.request(f"$JS.API.STREAM.INFO.{stream}", b""))
        finally:
            conn.close()
    except (OSError, WireError, ValueError) as exc:
        raise Unavailable(f"cannot read the stream {stream}: {exc}") from None
    if "error" in reply:
        raise Unavailable(f"cannot read the stream {stream}: {reply['error'].get('description')}")
    return int(reply["state"]["last_seq"])


def log_batches(
    url: str, stream: str, until: int, credential: Credential | None
) -> Iterator[list[RawEvent]]:
    return replay_batches(url, stream, 1, until, credential=credential)


def read_outputs(url: str, credential: Credential | None) -> dict[tuple[str, int], OutputSeen]:
    """What the output stream holds now, per run: line count and SHA-256 of its lines (as
    the transcript file holds them), its first line number and whether its end is there."""
    return asyncio.run(_read_outputs(url, credential))


async def _read_outputs(
    url: str, credential: Credential | None
) -> dict[tuple[str, int], OutputSeen]:
    import nats

    from events.stream_reader import StreamReader

    nc = await nats.connect(url, **connect_options(url, credential), connect_timeout=5)
    seen: dict[tuple[str, int], OutputSeen] = {}
    try:
        js = nc.jetstream()
        info = await js.stream_info(OUTPUT_STREAM)
        last = int(info.state.last_seq)
        if not info.state.messages:
            return seen
        first = int(info.state.first_seq)
        reader: StreamReader[tuple[int, Any]] = StreamReader(
            js, OUTPUT_STREAM, OUTPUT_ALL, first, lambda seq, msg: (seq, msg), 10_000
        )
        await reader.start()
        parts: dict[tuple[str, int], list[bytes]] = {}
        try:
            done = first - 1
            while done < last:
                seq, msg = await asyncio.wait_for(reader.queue.get(), 30)
                done = seq
                _take(seen, parts, msg)
        finally:
            await reader.close()
    finally:
        await nc.close()
    return seen


def _take(
    seen: dict[tuple[str, int], OutputSeen], parts: dict[tuple[str, int], list[bytes]], msg: Any
) -> None:
    tokens = (msg.subject or "").split(".")
    if len(tokens) != 4 or not tokens[3].isdigit():
        return
    key = (tokens[2], int(tokens[3]))
    run = seen.setdefault(key, OutputSeen())
    headers = msg.headers or {}
    if END_HEADER in headers:
        run.ended = True
        return
    number = headers.get(LINE_HEADER)
    if number is None:
        return
    if PART_HEADER in headers:
        index, total = (int(x) for x in headers[PART_HEADER].split("/"))
        got = parts.setdefault(key, [])
        if index == 1:
            got.clear()
        got.append(msg.data)
        if index < total:
            return
        line = b"".join(got)
        got.clear()
    else:
        line = msg.data
    if run.first_line is None:
        run.first_line = int(number) if number.isdigit() else None
    run.lines += 1
    run.sha.update(line + b"\n")
