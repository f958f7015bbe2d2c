"""The projector actor owns the DuckDB file; the feed hands it batches from the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pykka

from claudedo_actors.api.ports import ReadLog
from events.log import EventLog, RawEvent
from projections import GapError, Projection
from projections.rebuild import apply_pipelined, rebuild_file
from projections.snapshots import Snapshots

log = logging.getLogger("claudedo.projector")

T = TypeVar("T")
_BATCH = 5_000
# Behind by more than this, the feed first catches up with the bulk replay reader.
_CATCH_UP_LAG = 2_000
# A batch costs about the same for one event as for fifty (one DuckDB transaction of several
# statements, each about a millisecond of CPU). Under load, the feed lets events gather for
# up to _LINGER_S after the last batch before applying the next, so the projector costs a
# bounded share of a core however fast tasks run. A command does not wait for that: an event
# after a quiet moment is applied at once, and so is the log as soon as a command waits for
# its events (read-your-writes stays immediate). A query waits for the next batch, which
# comes at most _QUERY_LINGER_S after the last one while a query waits (or after the query
# came, if it came during a batch that lacked its events: see batch_due).
_LINGER_S = 1.0
_QUERY_LINGER_S = 0.25
_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0


# Reads the log from one sequence to another, in batches (events.replay.replay_batches).


class ProjectorActor(pykka.ThreadingActor):
    """The only opener of the projection file: every write and every query runs here."""

    def __init__(
        self, path: Path, snapshots: Snapshots | None = None, allowed: tuple[Path, ...] = ()
    ) -> None:
        """`allowed`: the folders the projection's connection may open files in (its
        snapshots, and the states built for `--as-of`)."""
        super().__init__()
        self.path = path
        self.projection: Projection | None = None
        self.snapshots = snapshots
        self.allowed = allowed

    def on_start(self) -> None:
        self.projection = Projection(self.path, allowed=self.allowed)

    def on_stop(self) -> None:
        if self.projection is not None:
            self.projection.close()
            self.projection = None

    def _p(self) -> Projection:
        assert self.projection is not None
        return self.projection

    def apply(self, batch: list[RawEvent]) -> int:
        p = self._p()
        before = p.checkpoint
        after = p.apply(batch)
        if self.snapshots is not None and self.snapshots.due(before, after):
            try:
                self.snapshots.take(p.con, after)
            except Exception as exc:  # a full disk: answers as of then replay more
                log.warning("no snapshot of the projection at %d: %s", after, exc)
        return after

    def checkpoint(self) -> int:
        return self._p().checkpoint

    def run(self, fn: Callable[[Projection], T]) -> T:
        """Run `fn` against the projection, serialised with the writes."""
        return fn(self._p())

    def swap(self, new_path: Path, read: Callable[[int, int], Iterable[list[RawEvent]]]) -> int:
        """Replace the projection file with a rebuilt one; returns the new checkpoint.

        The rebuilt file is first brought up to this projection's checkpoint (the events
        appended while it was rebuilt), so the checkpoint never goes back: a command waiting
        for its events never reads a projection that lacks them.
        """
        target = self._p().checkpoint
        fresh = Projection(new_path)
        try:
            if fresh.checkpoint < target:
                apply_pipelined(read(fresh.checkpoint + 1, target), fresh.apply)
        finally:
            fresh.close()
        self._p().close()
        self.projection = None
        os.replace(new_path, self.path)
        self.projection = Projection(self.path, allowed=self.allowed)
        return self.projection.checkpoint


def batch_due(applied_at: float, queries_came: Iterable[float]) -> float:
    """When the feed applies the next batch, on the loop's clock, if no command hurries it.

    Nobody waiting: _LINGER_S after the last batch. Queries waiting (`queries_came`: when
    each query still short of its events came): _QUERY_LINGER_S after the last batch, or
    after the earliest of them came if that was before (it came while a batch without its
    events was applied), so a query never waits longer than one linger and one batch.
    """
    came = min(queries_came, default=None)
    if came is None:
        return applied_at + _LINGER_S
    return min(applied_at, came) + _QUERY_LINGER_S


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
        on_failure: Callable[[str], bool],
        read_log: ReadLog,
        build_path: Path | None = None,
    ) -> None:
        """`build_path`: where an empty projection far behind the log is built in bulk mode
        (faster than applying batches to it) before it is swapped in; None applies batches."""
        self._log = log_
        self._read_log = read_log
        self._build_path = build_path
        self._projector = projector  # returns the current actor proxy (it may be restarted)
        self._on_failure = on_failure
        self.checkpoint = 0
        # Told each new checkpoint, on the loop: must not block (actors get a message).
        self.listeners: list[Callable[[int], None]] = []
        self._changed = asyncio.Condition()
        # Commands and queries waiting for a sequence the projection does not hold yet; the
        # event wakes the feed when one starts waiting.
        self._hurrying = 0
        # Each waiting query: when it came and the sequence it waits for.
        self._queries: dict[object, tuple[float, int]] = {}
        self._waiter_came = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.checkpoint = await _ask(self._projector().checkpoint())
        self._task = asyncio.create_task(self._run(), name="projection-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a feed blocked in a closing connection must not hold up a shutdown.
            await asyncio.wait({task}, timeout=5.0)

    async def run_in_projection(self, fn: Callable[[Projection], T]) -> T:
        result: T = await _ask(self._projector().run(fn))
        return result

    async def _catch_up(self) -> None:
        """Far behind (a restart after downtime): bulk-read up to the log's end first."""
        last = await self._log.last_seq()
        if last - self.checkpoint <= _CATCH_UP_LAG:
            return
        loop = asyncio.get_running_loop()
        if self.checkpoint == 0 and self._build_path is not None:
            # A new node, or a projection file deleted: bulk mode keeps every state in
            # memory and writes its rows once. A node stopped half-way builds it again.
            path = self._build_path
            log.info("projection empty, log at %d: catching up in bulk mode", last)
            await loop.run_in_executor(None, rebuild_file, path, self._read_log(1, last))
            swapped = await loop.run_in_executor(
                None, lambda: self._projector().swap(path, self._read_log).get()
            )
            await self._advance(swapped)
            return
        log.info("projection at %d, log at %d: catching up", self.checkpoint, last)
        batches = self._read_log(self.checkpoint + 1, last)

        def apply(batch: list[RawEvent]) -> int:
            cp: int = self._projector().apply(batch).get()
            loop.call_soon_threadsafe(lambda: loop.create_task(self._advance(cp)))
            return cp

        await loop.run_in_executor(None, apply_pipelined, batches, apply)
        await self._advance(await _ask(self._projector().checkpoint()))

    async def _run(self) -> None:
        backoff_s = _MIN_BACKOFF_S
        loop = asyncio.get_running_loop()
        # Nothing applied yet, so nothing to linger after. Not 0.0: the loop's clock counts
        # from the machine's start, and a machine up for less than a linger would wait.
        applied_at = -math.inf
        while True:
            try:
                await self._catch_up()
            except Exception:
                log.exception("bulk catch-up failed; reading the log event by event")
            reader = await self._log.read(self.checkpoint + 1)
            try:
                while True:
                    batch = await reader.next_batch(_BATCH, timeout_s=None)
                    if len(batch) < _BATCH:
                        await self._linger(applied_at)
                        batch.extend(reader.take_ready(_BATCH - len(batch)))
                    try:
                        cp = await _ask(self._projector().apply(batch))
                    except GapError as gap:
                        log.info("projection at %d: re-reading the log from there", gap.checkpoint)
                        await self._advance(gap.checkpoint)
                        break
                    except Exception as exc:
                        # A projector that fails on a batch is restarted by the supervisor.
                        log.exception("projector failed on a batch")
                        restarted = await asyncio.get_running_loop().run_in_executor(
                            None, self._on_failure, f"{type(exc).__name__}: {exc}"
                        )
                        if not restarted:
                            return  # the supervisor gave up: the node is stopping
                        await asyncio.sleep(backoff_s)  # not a hot loop on a failing store
                        backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                        await self._advance(await _ask(self._projector().checkpoint()))
                        break
                    backoff_s = _MIN_BACKOFF_S
                    applied_at = loop.time()
                    await self._advance(cp)
            finally:
                await reader.close()

    async def _linger(self, applied_at: float) -> None:
        """Let events gather until the linger since the last batch is over, cut short when a
        command or query starts waiting."""
        loop = asyncio.get_running_loop()
        while not self._hurrying:
            # A query the last batch served may not have left yet: only those still short.
            short = [came for came, seq in self._queries.values() if seq > self.checkpoint]
            left_s = batch_due(applied_at, short) - loop.time()
            if left_s <= 0:
                return
            self._waiter_came.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter_came.wait(), left_s)

    async def _advance(self, cp: int) -> None:
        async with self._changed:
            self.checkpoint = cp
            self._changed.notify_all()
        for listener in self.listeners:
            try:
                listener(cp)
            except Exception:
                log.exception("projection listener failed")

    async def wait_for(self, seq: int, timeout_s: float = 30.0, hurry: bool = True) -> None:
        """Return once the projection holds every event up to `seq`.

        `hurry`: apply what the log holds at once rather than letting events gather first
        (a command waiting for its own events); a query waits for the next batch.
        """
        if self.checkpoint >= seq:
            return
        me = object()
        if hurry:
            self._hurrying += 1
        else:
            self._queries[me] = (asyncio.get_running_loop().time(), seq)
        self._waiter_came.set()
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.checkpoint >= seq), timeout_s
                )
        finally:
            if hurry:
                self._hurrying -= 1
            else:
                del self._queries[me]
