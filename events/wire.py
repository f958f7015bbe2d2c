"""A minimal synchronous NATS protocol client: one socket, CONNECT, SUB, PUB, MSG/HMSG, PING.

It exists for two hot paths where nats-py's asyncio machinery costs more than the work: the
bulk replay of the log (events.replay) and the CLI's single request (no asyncio, no nats-py
import: a command starts in a third less time). It logs in with a user and password (or a
token); what it does not support (TLS, nkeys, JWT credentials) raises WireUnsupported so the
caller can use nats-py instead.
See docs/decisions/0003-minimal-wire-client.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

from events.credentials import inbox_prefix


class WireUnsupported(Exception):
    """This server or URL needs a feature the minimal client does not have."""


class WireError(Exception):
    """The server refused or broke off the conversation."""


class WireNoResponders(WireError):
    """Nobody subscribes to the subject of a request."""


_CRLF = b"\r\n"


class WireConnection:
    """One connection to a NATS server, driven synchronously."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        user: str | None = None,
        password: str | None = None,
        inbox: str | None = None,
    ) -> None:
        parsed = urlparse(url if "://" in url else f"nats://{url}")
        if parsed.scheme not in ("nats", ""):
            raise WireUnsupported(f"scheme {parsed.scheme}")
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 4222
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0
        info_line = self._line()
        if not info_line.startswith(b"INFO "):
            raise WireError("no INFO from server")
        info = json.loads(info_line[5:])
        if info.get("tls_required") or not info.get("headers", False):
            self.close()
            raise WireUnsupported("TLS or no header support")
        connect: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "lang": "python",
            "version": "claudedo-replay",
            "protocol": 1,
        }
        if user is not None and password is not None:
            connect["user"], connect["pass"] = user, password
        elif parsed.username and parsed.password is not None:
            connect["user"] = unquote(parsed.username)
            connect["pass"] = unquote(parsed.password)
        elif parsed.username:
            connect["auth_token"] = unquote(parsed.username)
        elif info.get("auth_required"):
            self.close()
            raise WireUnsupported("authentication other than user/password or token")
        # Where this connection takes its replies: the only subjects an operator or a
        # reader may subscribe to are inboxes of its role's own.
        self.inbox_prefix = inbox or inbox_prefix(str(connect.get("user", "")))
        self.send(b"CONNECT " + json.dumps(connect).encode() + _CRLF + b"PING" + _CRLF)
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise WireError(line.decode(errors="replace"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pub(self, subject: str, reply: str, payload: bytes) -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
        self.send(head + payload + _CRLF)

    def _fill(self, at_least: int = 1) -> None:
        """Receive until `at_least` more bytes than the unread ones have come.

        The buffer is bytes, so a message's payload is a slice of it, copied once; what was
        left unread (at most one message) is joined with what came in one copy, however many
        receives a large message takes."""
        chunks = [self.buf[self.pos :]] if self.pos < len(self.buf) else []
        got = 0
        while got < at_least:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise WireError("connection closed by server")
            chunks.append(chunk)
            got += len(chunk)
        self.buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.pos = 0

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(_CRLF, self.pos)
            if end >= 0:
                line = self.buf[self.pos : end]
                self.pos = end + 2
                return line
            self._fill()

    def _need(self, n: int) -> None:
        missing = n - (len(self.buf) - self.pos)
        if missing > 0:
            self._fill(missing)

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
                headers = self.buf[start : start + hdr_len]
                payload = self.buf[start + hdr_len : start + total]
                self.pos = start + total + 2
                yield parts[1], reply, headers, payload
            elif line.startswith(b"MSG "):
                parts = line.split(b" ")
                reply = parts[3] if len(parts) == 5 else None
                total = int(parts[-1])
                self._need(total + 2)
                start = self.pos
                payload = self.buf[start : start + total]
                self.pos = start + total + 2
                yield parts[1], reply, b"", payload
            elif line == b"PING":
                self.send(b"PONG" + _CRLF)
            elif line.startswith(b"-ERR"):
                raise WireError(line.decode(errors="replace"))
            # +OK, PONG and INFO updates need nothing

    def messages(self, limit: int) -> tuple[list[bytes], list[bytes], list[bytes], bytes]:
        """Up to `limit` messages with a reply subject: their subjects, replies and payloads,
        parsed in one pass over the buffer (a frame at a time, through `frames()`, costs the
        bulk replay twice as much). A status message (no reply, a NATS status line in its
        headers, e.g. 404 when a fetch found nothing more) ends the batch early: its status
        line is returned, or b"" when `limit` messages were read."""
        subjects: list[bytes] = []
        replies: list[bytes] = []
        payloads: list[bytes] = []
        add_subject, add_reply, add_payload = subjects.append, replies.append, payloads.append
        count = 0
        while count < limit:
            buf, pos = self.buf, self.pos
            size = len(buf)
            while count < limit:
                end = buf.find(_CRLF, pos)
                if end < 0:
                    break
                if buf.startswith(b"HMSG ", pos):
                    # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
                    parts = buf[pos + 5 : end].split(b" ")
                    start = end + 2
                    stop = start + int(parts[-1])
                    if stop + 2 > size:
                        self.pos = pos
                        self._fill(stop + 2 - size)
                        buf, pos, size = self.buf, self.pos, len(self.buf)
                        continue
                    if len(parts) != 5:
                        self.pos = stop + 2
                        status = buf[start:stop].split(_CRLF, 1)[0]
                        return subjects, replies, payloads, status
                    add_subject(parts[0])
                    add_reply(parts[2])
                    add_payload(buf[start + int(parts[3]) : stop])
                    count += 1
                    pos = stop + 2
                else:
                    # Anything else (PING, -ERR, a plain MSG) is rare here: one frame.
                    self.pos = pos
                    subject, reply, headers, payload = next(self.frames())
                    if reply is None:
                        return subjects, replies, payloads, headers.split(_CRLF, 1)[0]
                    add_subject(subject)
                    add_reply(reply)
                    add_payload(payload)
                    count += 1
                    buf, pos, size = self.buf, self.pos, len(self.buf)
            self.pos = pos
            if count < limit:
                self._fill()
        return subjects, replies, payloads, b""

    def request(self, subject: str, payload: bytes) -> bytes:
        """Send one request and return the first reply (the socket timeout bounds the wait)."""
        inbox = f"{self.inbox_prefix}.{os.urandom(11).hex()}"
        self.send(f"SUB {inbox} 1\r\n".encode())
        self.pub(subject, inbox, payload)
        for _, _, headers, data in self.frames():
            if headers.startswith(b"NATS/1.0 503"):
                raise WireNoResponders(subject)
            return data
        raise WireError("connection closed before the reply")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
