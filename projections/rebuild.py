"""Bulk application of the log: reading and projecting overlap, for rebuilds and catch-up."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import events as ev
from projections.projector import Projection

_DONE = object()


def apply_pipelined(
    batches: Iterable[list[ev.RawEvent]], apply: Callable[[list[ev.RawEvent]], int]
) -> int:
    """Apply every batch in order while the next one is being read; returns the count.

    A reader thread fills a small queue, so DuckDB's writes (which release the GIL) and the
    socket reads of the next batch run at the same time.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the applying thread
            failure.append(exc)
        finally:
            q.put(_DONE)

    reader = threading.Thread(target=read, name="replay-reader", daemon=True)
    reader.start()
    count = 0
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            batch: list[ev.RawEvent] = item  # type: ignore[assignment]
            apply(batch)
            count += len(batch)
    finally:
        stop.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)
        reader.join()
    if failure:
        raise failure[0]
    return count


def rebuild_file(path: Path, batches: Iterable[list[ev.RawEvent]]) -> int:
    """Project `batches` (the whole log, in order) into a fresh file; returns its checkpoint."""
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    fresh = Projection(path, bulk=True)
    try:
        apply_pipelined(batches, fresh.apply)
        fresh.finish()
        return fresh.checkpoint
    finally:
        fresh.close()
