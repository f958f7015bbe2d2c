"""The projector actor owns the DuckDB file; the feed hands it batches from the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pykka

from events.log import EventLog, RawEvent
from projections import GapError, Projection

log = logging.getLogger("claudedo.projector")

T = TypeVar("T")
_BATCH = 5_000


class ProjectorActor(pykka.ThreadingActor):
    """The only opener of the projection file: every write and every query runs here."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.projection: Projection | None = None

    def on_start(self) -> None:
        self.projection = Projection(self.path)

    def on_stop(self) -> None:
        if self.projection is not None:
            self.projection.close()
            self.projection = None

    def _p(self) -> Projection:
        assert self.projection is not None
        return self.projection

    def apply(self, batch: list[RawEvent]) -> int:
        return self._p().apply(batch)

    def checkpoint(self) -> int:
        return self._p().checkpoint

    def run(self, fn: Callable[[Projection], T]) -> T:
        """Run `fn` against the projection, serialised with the writes."""
        return fn(self._p())

    def swap(self, new_path: Path) -> int:
        """Replace the projection file with a rebuilt one; returns the new checkpoint."""
        self._p().close()
        self.projection = None
        os.replace(new_path, self.path)
        self.projection = Projection(self.path)
        return self.projection.checkpoint


async def _ask(future: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, future.get)


class ProjectionFeed:
    """Reads the log from the projection's checkpoint and applies it in batches, forever.

    Waiters (`wait_for`) learn when a sequence is in the projection: read-your-writes.
    """

    def __init__(
        self,
        log_: EventLog,
        projector: Callable[[], Any],
        on_failure: Callable[[str], Any],
    ) -> None:
        self._log = log_
        self._projector = projector  # returns the current actor proxy (it may be restarted)
        self._on_failure = on_failure
        self.checkpoint = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.checkpoint = await _ask(self._projector().checkpoint())
        self._task = asyncio.create_task(self._run(), name="projection-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_in_projection(self, fn: Callable[[Projection], T]) -> T:
        result: T = await _ask(self._projector().run(fn))
        return result

    async def _run(self) -> None:
        while True:
            reader = await self._log.read(self.checkpoint + 1)
            try:
                while True:
                    batch = await reader.next_batch(_BATCH, timeout_s=None)
                    try:
                        cp = await _ask(self._projector().apply(batch))
                    except GapError as gap:
                        log.info("projection at %d: re-reading the log from there", gap.checkpoint)
                        await self._advance(gap.checkpoint)
                        break
                    except Exception as exc:
                        log.exception("projector failed on a batch")
                        await asyncio.get_running_loop().run_in_executor(
                            None, self._on_failure, f"{type(exc).__name__}: {exc}"
                        )
                        await self._advance(await _ask(self._projector().checkpoint()))
                        break
                    await self._advance(cp)
            finally:
                await reader.close()

    async def _advance(self, cp: int) -> None:
        async with self._changed:
            self.checkpoint = cp
            self._changed.notify_all()

    async def resync(self) -> None:
        """After a swap: take the projection's checkpoint and re-read from there."""
        cp = await _ask(self._projector().checkpoint())
        await self.stop()
        await self._advance(cp)
        self._task = asyncio.create_task(self._run(), name="projection-feed")

    async def wait_for(self, seq: int, timeout_s: float = 30.0) -> None:
        """Return once the projection holds every event up to `seq`."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.checkpoint >= seq), timeout_s
            )
