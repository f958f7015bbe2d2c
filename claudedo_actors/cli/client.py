"""The client side of the API: find the node of a home, send one request, read the reply."""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import os
import socket
from pathlib import Path
from typing import Any

import msgspec

from claudedo_actors.node.home import Home, NodeAddress
from events.errors import ClaudeDoError, Unavailable


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

    def request(self, verb: str, payload: dict[str, Any]) -> Any:
        body = msgspec.json.encode({"actor": default_actor(), **payload})
        reply = self._send(f"claudedo.api.{verb}", body)
        decoded = msgspec.json.decode(reply)
        if "error" in decoded:
            err = decoded["error"]
            raise ClaudeDoError(str(err.get("message")), code=str(err.get("code", "error")))
        return decoded["ok"]

    def _send(self, subject: str, data: bytes) -> bytes:
        # The minimal wire client: no asyncio and no nats-py import, so a command starts fast.
        from events.wire import WireConnection, WireError, WireNoResponders, WireUnsupported

        url = self.address.nats_url
        try:
            conn = WireConnection(url, self.timeout_s)
        except WireUnsupported:
            return asyncio.run(self._send_with_nats_py(subject, data))
        except (OSError, WireError):
            raise Unavailable(f"cannot reach the node's NATS server at {url}") from None
        try:
            return conn.request(subject, data)
        except WireNoResponders:
            raise Unavailable(f"no node answers on {url} (is it starting or stopping?)") from None
        except TimeoutError:
            raise Unavailable(f"the node did not answer within {self.timeout_s:.0f}s") from None
        except (OSError, WireError) as exc:
            raise Unavailable(f"lost the connection to the node: {exc}") from None
        finally:
            conn.close()

    async def _send_with_nats_py(self, subject: str, data: bytes) -> bytes:
        import nats
        from nats.errors import NoRespondersError, NoServersError
        from nats.errors import TimeoutError as NatsTimeout

        url = self.address.nats_url
        try:
            nc = await nats.connect(
                url,
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=_ignore,
            )
        except (TimeoutError, NoServersError, OSError):
            raise Unavailable(f"cannot reach the node's NATS server at {url}") from None
        try:
            msg = await nc.request(subject, data, timeout=self.timeout_s)
            return bytes(msg.data)
        except NoRespondersError:
            raise Unavailable(f"no node answers on {url} (is it starting or stopping?)") from None
        except NatsTimeout:
            raise Unavailable(f"the node did not answer within {self.timeout_s:.0f}s") from None
        finally:
            await nc.close()


async def _ignore(exc: Exception) -> None:
    """Connection errors surface as the request's own one-line error."""
