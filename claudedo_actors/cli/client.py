"""The client side of the API: find the node of a home, send one request, read the reply."""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from claudedo_actors.api import pages
from claudedo_actors.api.pages import CONTINUED, NEXT
from claudedo_actors.node.home import Home, NodeAddress
from events.credentials import Credential, connect_options
from events.errors import ClaudeDoError, Invalid, Unavailable

if TYPE_CHECKING:
    from events.wire import WireConnection


def default_actor() -> str:
    """Who asks: the OS user and host of the CLI."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"user:{user}@{socket.gethostname()}"


def _node_holds_lock(home: Home) -> bool:
    """Whether a live node holds the home's lock (the kernel drops it when the node dies)."""
    try:
        fd = os.open(home.lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


class NodeClient:
    """Requests to the node that runs on a home folder."""

    def __init__(self, home: Path, timeout_s: float = 60.0) -> None:
        self.home = Home(home)
        address = NodeAddress.read(self.home)
        if address is None or not _node_holds_lock(self.home):
            raise Unavailable(
                f"no node running for home {self.home.root} (start one with: claudedo up)"
            )
        self.address = address
        self.timeout_s = timeout_s
        self.credential = client_credential(self.home)

    def request(self, verb: str, payload: dict[str, Any]) -> Any:
        """The node's reply to one request, whole (a listing's pages joined).

        Raises the node's error as ClaudeDoError, Unavailable when it cannot be asked."""
        return pages.join(self.parts(verb, payload))

    def parts(self, verb: str, payload: dict[str, Any]) -> Iterator[Any]:
        """The reply's parts as they arrive: each page of a listing (tasks, audit, runs, sql),
        else the one value. The client asks for the next part only when it needs it."""
        body = msgspec.json.encode({"actor": default_actor(), **payload, "paged": True})
        for document in self._documents(f"claudedo.api.{verb}", body):
            decoded = msgspec.json.decode(document)
            if "error" in decoded:
                err = decoded["error"]
                raise ClaudeDoError(str(err.get("message")), code=str(err.get("code", "error")))
            yield decoded["ok"]

    def _documents(self, subject: str, data: bytes) -> Iterator[bytes]:
        # The minimal wire client: no asyncio and no nats-py import, so a command starts fast.
        from events.wire import WireConnection, WireError, WireUnsupported

        url = self.address.nats_url
        cred = self.credential
        login = (cred.user, cred.password, cred.inbox_prefix) if cred else (None, None, None)
        try:
            conn = WireConnection(url, self.timeout_s, *login)
        except WireUnsupported:
            import asyncio  # here only: importing it costs every command about 20 ms

            yield from asyncio.run(self._documents_with_nats_py(subject, data))
            return
        except WireError as exc:
            raise Unavailable(
                refusal(str(exc)) or f"cannot reach the node's NATS server at {url}"
            ) from None
        except OSError:
            raise Unavailable(f"cannot reach the node's NATS server at {url}") from None
        try:
            yield from self._pull(conn, subject, data)
        except TimeoutError:
            raise Unavailable(f"the node did not answer within {self.timeout_s:.0f}s") from None
        except (OSError, WireError) as exc:
            if "maximum payload" in str(exc).lower():
                raise Invalid(
                    f"the request is {len(data)} bytes, more than the NATS server takes "
                    "in one message"
                ) from None
            refused = refusal(str(exc))
            if refused:
                raise Unavailable(refused) from None
            raise Unavailable(f"lost the connection to the node: {exc}") from None
        finally:
            conn.close()

    def _pull(self, conn: WireConnection, subject: str, data: bytes) -> Iterator[bytes]:
        """Documents of a reply over one connection: each message's NEXT is asked for once
        the document before is handed on (api/pages.py)."""
        inbox = f"{conn.inbox_prefix}.{os.urandom(11).hex()}"
        conn.send(f"SUB {inbox} 1\r\n".encode())
        conn.pub(subject, inbox, data)
        frames = conn.frames()
        chunks: list[bytes] = []
        first = True
        while True:
            _, _, raw_headers, payload = next(frames)
            headers = _headers(raw_headers)
            if headers.get("status") == "503":
                if first:
                    raise Unavailable(
                        f"no node answers on {self.address.nats_url} (is it starting or stopping?)"
                    )
                raise Unavailable("the node stopped answering in the middle of its reply")
            first = False
            chunks.append(payload)
            if CONTINUED.lower() not in headers:
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks = []
            following = headers.get(NEXT.lower())
            if following is None:
                return
            conn.pub(following, inbox, b"")

    async def _documents_with_nats_py(self, subject: str, data: bytes) -> list[bytes]:
        """`_documents` through nats-py (TLS, credentials): the whole reply, then its parts."""
        import nats
        from nats.errors import NoServersError
        from nats.errors import TimeoutError as NatsTimeout

        url = self.address.nats_url
        try:
            login = connect_options(url, self.credential)
            nc = await nats.connect(
                url,
                **login,
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=_ignore,
            )
        except (TimeoutError, NoServersError, OSError):
            raise Unavailable(f"cannot reach the node's NATS server at {url}") from None
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(subject, data, reply=inbox)
            documents: list[bytes] = []
            chunks: list[bytes] = []
            while True:
                msg = await sub.next_msg(timeout=self.timeout_s)
                headers = {k.lower(): v for k, v in (msg.headers or {}).items()}
                if headers.get("status") == "503":
                    raise Unavailable(f"no node answers on {url} (is it starting or stopping?)")
                chunks.append(bytes(msg.data))
                if CONTINUED.lower() not in headers:
                    documents.append(b"".join(chunks))
                    chunks = []
                following = headers.get(NEXT.lower())
                if following is None:
                    return documents
                await nc.publish(following, b"", reply=inbox)
        except NatsTimeout:
            raise Unavailable(f"the node did not answer within {self.timeout_s:.0f}s") from None
        finally:
            await nc.close()


def client_credential(home: Home) -> Credential | None:
    """Who the CLI logs in as: the file CLAUDEDO_NATS_CREDS names, else the home's operator
    credentials, else nobody (a server without authorization)."""
    from events.credentials import CREDS_ENV

    given = os.environ.get(CREDS_ENV)
    if given:
        return Credential.read(given)
    path = home.creds_dir / "operator.json"
    return Credential.read(path) if path.exists() else None


def refusal(error: str) -> str:
    """The server's refusal in one line (`-ERR 'Authorization Violation'`, a permissions
    violation), or "" when `error` is not one."""
    lowered = error.lower()
    if "authorization violation" in lowered or "authentication" in lowered:
        return "the NATS server refused these credentials (authorization violation)"
    if "permissions violation" in lowered:
        what = error.split("'", 1)[-1].rstrip("'").strip() if "'" in error else error
        return f"the NATS server refused: {what} (this credential's role may not do that)"
    return ""


def _headers(raw: bytes) -> dict[str, str]:
    """NATS headers (`NATS/1.0[ status]\\r\\nKey: value...`) by lower-case key; a status line's
    code under "status"."""
    if not raw:
        return {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    out: dict[str, str] = {}
    status = lines[0].split(" ", 2)
    if len(status) > 1 and status[1].isdigit():
        out["status"] = status[1]
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


async def _ignore(exc: Exception) -> None:
    """Connection errors surface as the request's own one-line error."""
