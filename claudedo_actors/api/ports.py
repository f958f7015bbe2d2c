"""What the API needs of its node, as protocols: the projection feed and a log reader.

The node (`claudedo_actors.node`) provides both, so the rooms depend one way (node -> api).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from events.log import RawEvent
from projections import Projection

T = TypeVar("T")

# Reads the log's events from one sequence to another, in batches.
ReadLog = Callable[[int, int], Iterable[list[RawEvent]]]


class Projections(Protocol):
    """The projection as the feed keeps it (node/projector_actor.py's ProjectionFeed)."""

    checkpoint: int

    async def wait_for(self, seq: int, timeout_s: float = 30.0, hurry: bool = True) -> None:
        """Return once the projection holds every event up to `seq`; TimeoutError if not."""

    async def run_in_projection(self, fn: Callable[[Projection], T]) -> T:
        """Run `fn` on the projector's thread with its connection."""
