"""The board's HTTP server: uvicorn on a thread of its own, on a socket bound before it
starts (so the node knows its URL, also for port 0), stopped with the node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claudedo_actors.web.live import Changes
from events.errors import ClaudeDoError

if TYPE_CHECKING:
    from claudedo_actors.web.app import Follow

log = logging.getLogger("claudedo.web")

DEFAULT_WEB = "127.0.0.1:0"


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6; port 0: a free one) as the server binds it."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ClaudeDoError(f"--web {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080", "invalid")
    return host, int(port)


class WebServer:
    """Serves `make_app`'s board for a node; `call(verb, payload)` runs on the node's loop."""

    def __init__(
        self,
        address: str,
        token: str,
        actor: str,
        run_on_node: Callable[[Coroutine[Any, Any, Any]], Any],
        api_call: Callable[[str, dict[str, Any]], Coroutine[Any, Any, Any]],
        logs_dir: Path | None = None,
        follow: Follow | None = None,
    ) -> None:
        """`logs_dir`: where the node keeps its runs' lines; `follow`: how to follow a run's
        lines live (on the server's loop)."""
        self.host, self.port = parse_address(address)
        self._logs_dir = logs_dir
        self._follow = follow
        self._token = token
        self._actor = actor
        self._run_on_node = run_on_node
        self._api_call = api_call
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.changes = Changes()

    def start(self, preferred_port: int | None = None) -> str:
        """Bind and serve; the board's URL (without its token). With port 0, the
        `preferred_port` (the one of the node's last life) is tried first, so open pages
        find the board again after a restart."""
        import uvicorn

        from claudedo_actors.web.app import make_app

        sock = None
        if self.port == 0 and preferred_port:
            with contextlib.suppress(OSError):
                sock = self._bind(preferred_port)
        if sock is None:
            try:
                sock = self._bind(self.port)
            except OSError as exc:
                raise ClaudeDoError(
                    f"cannot serve the board on {self.host}:{self.port}: {exc.strerror or exc}",
                    "invalid",
                ) from None
        sock.listen(128)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

        async def call(verb: str, payload: dict[str, Any]) -> Any:
            # The API runs on the node's loop; this waits for it on the server's.
            future = self._run_on_node(self._api_call(verb, payload))
            return await asyncio.wrap_future(future)

        app = make_app(self._token, call, self._actor, self.changes, self._logs_dir, self._follow)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, server_header=False,
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="web", daemon=True)
        self._thread.start()
        return self.url

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    @property
    def port_bound(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except Exception:
            log.exception("the board's server stopped")
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def advanced(self, seq: int) -> None:
        """The projection reached `seq`: the open pages fetch what they show again."""
        self.changes.advanced(seq)

    def stop(self) -> None:
        self.changes.close()  # the open event streams end, so the server can stop
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
