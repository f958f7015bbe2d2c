"""The supervisor: starts children, restarts a failed one, gives up OTP-style on a flapping one."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

log = logging.getLogger("claudedo.supervisor")

Factory = Callable[[], pykka.ActorRef[Any]]


class Supervisor(pykka.ThreadingActor):
    """One-for-one supervision: at most `max_restarts` restarts of a child in `window_s`."""

    def __init__(
        self,
        on_give_up: Callable[[str], None],
        max_restarts: int = 3,
        window_s: float = 60.0,
    ) -> None:
        super().__init__()
        self._on_give_up = on_give_up
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._factories: dict[str, Factory] = {}
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        self._restarts: dict[str, deque[float]] = {}
        self._gave_up = False

    def start_child(self, name: str, factory: Factory) -> pykka.ActorRef[Any]:
        self._factories[name] = factory
        self._restarts[name] = deque()
        ref = factory()
        self._children[name] = ref
        return ref

    def child(self, name: str) -> pykka.ActorRef[Any]:
        return self._children[name]

    def child_failed(self, name: str, reason: str) -> pykka.ActorRef[Any] | None:
        """A child reported a failure: restart it, or give up when it keeps failing."""
        if self._gave_up or name not in self._factories:
            return None
        now = time.monotonic()
        history = self._restarts[name]
        while history and now - history[0] > self._window_s:
            history.popleft()
        if len(history) >= self._max_restarts:
            self._gave_up = True
            message = (
                f"{name} failed {len(history) + 1} times within {self._window_s:.0f}s "
                f"(last: {reason}); stopping the node"
            )
            log.error(message)
            self._on_give_up(message)
            return None
        history.append(now)
        log.warning("restarting %s after failure: %s", name, reason)
        old = self._children.get(name)
        if old is not None and old.is_alive():
            old.stop(block=True)
        ref = self._factories[name]()
        self._children[name] = ref
        return ref

    def on_stop(self) -> None:
        for ref in reversed(list(self._children.values())):
            if ref.is_alive():
                ref.stop(block=True)
