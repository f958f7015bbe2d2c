"""Bulk replay of the log: a small, synchronous NATS reader built for throughput.

nats-py delivers JetStream messages at about 36k/s here (it parses every header block with
the email parser); a rebuild must read faster than it projects. This reader speaks just the
part of the NATS protocol a replay needs (CONNECT, SUB, PUB, HMSG/MSG, PING) over one socket,
pulls large batches from an ephemeral pull consumer, and skips header parsing. Anything it
does not support (TLS, credentials files) raises ReplayUnsupported; callers then read with
nats-py instead. See docs/decisions/0003-fast-replay-reader.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

from events.log import RawEvent

_CRLF = b"\r\n"


class ReplayUnsupported(Exception):
    """This server or URL needs a feature the replay reader does not have."""


class ReplayError(Exception):
    """The server refused or broke off the replay."""


class _Conn:
    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urlparse(url if "://" in url else f"nats://{url}")
        if parsed.scheme not in ("nats", ""):
            raise ReplayUnsupported(f"scheme {parsed.scheme}")
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 4222
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        info_line = self._line()
        if not info_line.startswith(b"INFO "):
            raise ReplayError("no INFO from server")
        info = json.loads(info_line[5:])
        if info.get("tls_required") or not info.get("headers", False):
            self.close()
            raise ReplayUnsupported("TLS or no header support")
        connect: dict[str, object] = {
            "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
            "lang": "python", "version": "claudedo-replay", "protocol": 1,
        }  # fmt: skip
        if parsed.username and parsed.password is not None:
            connect["user"] = unquote(parsed.username)
            connect["pass"] = unquote(parsed.password)
        elif parsed.username:
            connect["auth_token"] = unquote(parsed.username)
        elif info.get("auth_required"):
            self.close()
            raise ReplayUnsupported("authentication other than user/password or token")
        self.send(b"CONNECT " + json.dumps(connect).encode() + _CRLF + b"PING" + _CRLF)
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise ReplayError(line.decode(errors="replace"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pub(self, subject: str, reply: str, payload: bytes) -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
        self.send(head + payload + _CRLF)

    def _fill(self) -> None:
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ReplayError("connection closed by server")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(_CRLF, self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def _need(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            self._fill()

    def frames(self) -> Iterator[tuple[bytes, bytes | None, bytes, bytes]]:
        """(subject, reply, headers, payload) of each message; answers PINGs on the way."""
        while True:
            line = self._line()
            if line.startswith(b"HMSG "):
                parts = line.split(b" ")
                reply = parts[3] if len(parts) == 6 else None
                hdr_len, total = int(parts[-2]), int(parts[-1])
                self._need(total + 2)
                start = self.pos
                headers = bytes(self.buf[start : start + hdr_len])
                payload = bytes(self.buf[start + hdr_len : start + total])
                self.pos = start + total + 2
                yield parts[1], reply, headers, payload
            elif line.startswith(b"MSG "):
                parts = line.split(b" ")
                reply = parts[3] if len(parts) == 5 else None
                total = int(parts[-1])
                self._need(total + 2)
                start = self.pos
                payload = bytes(self.buf[start : start + total])
                self.pos = start + total + 2
                yield parts[1], reply, b"", payload
            elif line == b"PING":
                self.send(b"PONG" + _CRLF)
            elif line.startswith(b"-ERR"):
                raise ReplayError(line.decode(errors="replace"))
            # +OK, PONG and INFO updates need nothing

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _stream_seq(reply: bytes) -> int:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending> (v1), or with
    # <domain>.<account hash> after ACK and a random token at the end (v2).
    tokens = reply.split(b".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def replay(
    url: str,
    stream: str,
    from_seq: int,
    until_seq: int,
    batch: int = 20_000,
    timeout_s: float = 30.0,
) -> Iterator[list[RawEvent]]:
    """Batches of the stream's messages from `from_seq` to `until_seq` (inclusive), in order."""
    if until_seq < from_seq:
        return
    conn = _Conn(url, timeout_s)
    inbox = f"_INBOX.replay{os.urandom(8).hex()}"
    try:
        conn.send(f"SUB {inbox}.* 1\r\n".encode())
        config = {
            "stream_name": stream,
            "config": {
                "deliver_policy": "by_start_sequence",
                "opt_start_seq": from_seq,
                "ack_policy": "none",
                "inactive_threshold": 60_000_000_000,
                "mem_storage": True,
                "num_replicas": 1,
            },
        }
        conn.pub(f"$JS.API.CONSUMER.CREATE.{stream}", f"{inbox}.c", json.dumps(config).encode())
        frames = conn.frames()
        _, _, _, created = next(frames)
        reply = json.loads(created)
        if "error" in reply:
            raise ReplayError(f"cannot create replay consumer: {reply['error']}")
        consumer = reply["name"]
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        seq = from_seq - 1
        while seq < until_seq:
            want = min(batch, until_seq - seq)
            conn.pub(
                next_subject, f"{inbox}.f", json.dumps({"batch": want, "no_wait": True}).encode()
            )
            out: list[RawEvent] = []
            for subject, ack, headers, payload in frames:
                if ack is None:  # a status: 404 no messages, 408 timeout, ...
                    if headers.startswith(b"NATS/1.0 404") or headers.startswith(b"NATS/1.0 408"):
                        break
                    raise ReplayError(headers.split(_CRLF, 1)[0].decode(errors="replace"))
                seq = _stream_seq(ack)
                if seq <= until_seq:
                    out.append(RawEvent(seq, subject.decode(), payload))
                if len(out) >= want or seq >= until_seq:
                    break
            if not out:
                raise ReplayError(f"the stream ended at {seq}, before {until_seq}")
            yield out
        conn.pub(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", f"{inbox}.d", b"")
    finally:
        conn.close()
