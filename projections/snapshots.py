"""The projection as it was: snapshots of its state every N events, and answers `as of` a
past sequence built from the nearest snapshot before it plus a replay of the rest.

- A snapshot is a DuckDB file `<folder>/v<format>/<seq>.duckdb` holding the state tables
  (lists, tasks, subtasks, runs, worktrees) as they were right after sequence `seq`. The
  projector takes one after a batch that crosses a multiple of `every`. Files of another
  projection format are never read.
- `build` makes a projection file of the state after sequence `seq`: a fresh projection
  loaded from the nearest snapshot at or before `seq`, and the log from there to `seq`
  applied. A build that replayed `every` events or more leaves a snapshot of its result, so
  the next question near there is quick even on a home whose projection was rebuilt in bulk
  (which takes no snapshots).
- `as_of_views` runs a query on the live projection's connection as if it were that built
  file: temporary views over its state tables shadow the live ones (views of the projection,
  such as the analytics views, resolve through them too), and `events` and
  `skipped_messages` are the live ones up to `seq`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

import duckdb

import events as ev
from projections.projector import Projection
from projections.rebuild import apply_pipelined
from projections.store import FORMAT_VERSION

STATE_TABLES = ("lists", "tasks", "subtasks", "runs", "worktrees")
LOGGED_TABLES = ("events", "skipped_messages")
DEFAULT_EVERY = 50_000

ReadLog = Callable[[int, int], Iterable[list[ev.RawEvent]]]

_NAME = re.compile(r"^(\d{1,19})\.duckdb$")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Snapshots:
    """The snapshot files of one home."""

    def __init__(self, folder: Path, every: int = DEFAULT_EVERY) -> None:
        self.folder = folder / f"v{FORMAT_VERSION}"
        self.every = max(1, every)

    def seqs(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for n in names if (m := _NAME.match(n)))

    def base_for(self, seq: int) -> int:
        """The last snapshot at or before `seq` (0: none, start from the empty state)."""
        return max((s for s in self.seqs() if s <= seq), default=0)

    def due(self, before: int, after: int) -> bool:
        """Whether a batch that moved the projection from `before` to `after` crossed a
        multiple of `every`."""
        return after // self.every > before // self.every

    def path(self, seq: int) -> Path:
        return self.folder / f"{seq}.duckdb"

    def take(self, con: duckdb.DuckDBPyConnection, seq: int) -> Path:
        """Write the state tables of the projection `con` is on (at `seq`) as a snapshot."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(seq)
        part = target.with_name(f".{seq}.{secrets.token_hex(4)}.part")
        alias = f"snap_{secrets.token_hex(4)}"
        try:
            con.execute(f"ATTACH {_quoted(part)} AS {alias}")
            try:
                for table in STATE_TABLES:
                    con.execute(f"CREATE TABLE {alias}.{table} AS SELECT * FROM main.{table}")
            finally:
                con.execute(f"DETACH {alias}")
            os.replace(part, target)
        finally:
            for left in (part, part.with_name(part.name + ".wal")):
                left.unlink(missing_ok=True)
        return target

    def load(self, p: Projection, seq: int) -> None:
        """Fill the fresh projection `p` with snapshot `seq`'s state; its checkpoint is then
        `seq`."""
        alias = f"snap_{secrets.token_hex(4)}"
        p.con.execute(f"ATTACH {_quoted(self.path(seq))} AS {alias} (READ_ONLY)")
        try:
            for table in STATE_TABLES:
                p.con.execute(f"INSERT INTO main.{table} SELECT * FROM {alias}.{table}")
            p.con.execute("UPDATE projection_checkpoint SET seq = ? WHERE name = 'main'", [seq])
        finally:
            p.con.execute(f"DETACH {alias}")
        p.checkpoint = seq
        p.drop_cache()

    def build(self, seq: int, read: ReadLog, target: Path, skipped: Collection[int] = ()) -> Path:
        """A projection file at `target` of the state right after `seq` (closed).

        `skipped`: the sequences the live projection skipped (duplicates of events it had
        applied, messages that are no event). They are skipped here too, whatever this
        fresh file knows: it lacks the event ids before its snapshot, so a duplicate of an
        older event would look new to it."""
        base = self.base_for(seq)
        part = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        p = Projection(part, allowed=(self.folder,))
        try:
            if base:
                self.load(p, base)
            if seq > base:
                apply_pipelined(_skipping(read(base + 1, seq), skipped), p.apply)
            if p.checkpoint != seq:
                raise RuntimeError(f"the log ended at {p.checkpoint}, before {seq}")
            if seq - base >= self.every and not self.path(seq).exists():
                self.take(p.con, seq)
            p.close()
            os.replace(part, target)
        finally:
            with contextlib.suppress(duckdb.Error):
                p.close()
            for left in (part, part.with_name(part.name + ".wal")):
                left.unlink(missing_ok=True)
        return target

    def prune(self, keep_after: int) -> None:
        """Remove snapshots past `keep_after` (a projection rebuilt from a shorter log)."""
        for s in self.seqs():
            if s > keep_after:
                self.path(s).unlink(missing_ok=True)


def _skipping(
    batches: Iterable[list[ev.RawEvent]], skipped: Collection[int]
) -> Iterator[list[ev.RawEvent]]:
    """The batches with each skipped sequence's bytes emptied: the projection records it as
    skipped and folds nothing of it."""
    if not skipped:
        yield from batches
        return
    for batch in batches:
        yield [ev.RawEvent(r.seq, r.subject, b"") if r.seq in skipped else r for r in batch]


@contextlib.contextmanager
def as_of_views(p: Projection, built: Path, seq: int) -> Iterator[None]:
    """While inside, the projection's connection answers as it was right after `seq`
    (`built` is the file `Snapshots.build` made for it); so do cursors that
    `views_on` is called for (`claudedo sql` runs on one)."""
    alias = f"asof_{secrets.token_hex(4)}"
    p.con.execute(f"ATTACH {_quoted(built)} AS {alias} (READ_ONLY)")
    made: list[str] = []
    try:
        views_on(p.con, alias, seq, made)
        p.as_of = (alias, seq)
        yield
    finally:
        p.as_of = None
        # Every view made is dropped, also after a failure half-way: left behind, they
        # would shadow the live tables.
        for table in made:
            p.con.execute(f"DROP VIEW IF EXISTS temp.main.{table}")
        p.con.execute(f"DETACH {alias}")


def views_on(
    con: duckdb.DuckDBPyConnection, alias: str, seq: int, made: list[str] | None = None
) -> list[str]:
    """Temporary views on `con` over the attached past state `alias` and the live log tables
    up to `seq`; their names, added to `made` as each is made."""
    row = con.execute("SELECT current_database()").fetchone()
    live = '"' + str(row[0] if row else "main").replace('"', '""') + '"'
    made = [] if made is None else made
    for table in STATE_TABLES:
        con.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM {alias}.main.{table}")
        made.append(table)
    for table in LOGGED_TABLES:
        con.execute(
            f"CREATE TEMP VIEW {table} AS SELECT * FROM {live}.main.{table} WHERE seq <= {int(seq)}"
        )
        made.append(table)
    return made
