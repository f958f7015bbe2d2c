"""Identifiers: time-ordered event ids, random aggregate ids."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from typing import Annotated

from msgspec import Meta

# The text of an aggregate id. The node makes UUIDs (below); the envelope accepts the alphabet
# they are written in (lowercase letters, digits, dashes, at most 64 characters, starting with
# a letter or digit), which tools and tests name aggregates with too. Nothing else: an id is a
# token of event subjects and the last part of the paths of a task's worktree, sandbox and logs
# (`<home>/worktrees/<id>`), so a dot, a slash, a NUL, `..` or an over-long id never reaches
# them. A message with another id is skipped and recorded by the projector.
# (`$` alone would also match before a final newline: hence the look-ahead.)
AGGREGATE_ID_PATTERN = "^[0-9a-z][0-9a-z-]{0,63}$(?!\n)"
AggregateId = Annotated[str, Meta(pattern=AGGREGATE_ID_PATTERN)]
_aggregate_id = re.compile(AGGREGATE_ID_PATTERN)


def is_aggregate_id(value: object) -> bool:
    """Whether `value` is the text of an aggregate id (see AGGREGATE_ID_PATTERN)."""
    return isinstance(value, str) and _aggregate_id.search(value) is not None


_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_event_id() -> str:
    """A UUIDv7 string: unique, and sorted by creation time (monotonic within a process)."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or earlier, if the clock stepped back) millisecond: bump a counter so ids
            # created in one process never go backwards.
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = ms
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def new_aggregate_id() -> str:
    """A random UUIDv4 string. Random, not time-ordered, so a short prefix identifies it."""
    return str(uuid.uuid4())
