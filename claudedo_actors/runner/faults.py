"""Named fault points the fault suite fires in a real node: an actor that raises, a node that
dies at an exact moment. Off unless `CLAUDEDO_FAULTS` names points; nothing to configure.

`CLAUDEDO_FAULTS=slot.run_started,node.after_run_finished:exit` makes the slot raise once
after a run started and the node exit (as a kill -9 would, with no cleanup) once a run's
RunFinished is stored. Each point fires once per process.
"""

from __future__ import annotations

import os
import threading

ENV = "CLAUDEDO_FAULTS"

_fired: set[str] = set()
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised at a fault point the environment named."""


def _points() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition(":")
        out[name] = action or "raise"
    return out


_POINTS = _points()


def at(point: str) -> None:
    """Fail here if the environment asked for it (and this point has not fired yet)."""
    action = _POINTS.get(point)
    if action is None:
        return
    with _lock:
        if point in _fired:
            return
        _fired.add(point)
    if action == "exit":
        os._exit(137)  # no cleanup, no terminal event: what a kill -9 leaves
    raise InjectedFault(f"fault injected at {point}")
