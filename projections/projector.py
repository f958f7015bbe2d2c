"""The projector: applies event batches to DuckDB, rows and checkpoint in one transaction."""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from msgspec.structs import astuple

import events as ev
from projections.state import (
    ListState,
    RunState,
    SubtaskState,
    TaskState,
    WorktreeState,
    fold_list,
    fold_task,
)
from projections.store import arrow_schema, checkpoint_of, in_ids, open_db

log = logging.getLogger("claudedo.projector")

_S = TypeVar("_S", bound=msgspec.Struct)
_CREATIONS = frozenset({ev.ListCreated, ev.TaskCreated})
# Errors a stored value can cause when it becomes a row; anything else (I/O, memory) is the
# environment's, and propagates.
_DATA_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    pa.ArrowException,
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
)
# Folded states kept in memory, most recently changed first: the tasks being worked on. An
# older task is read back from its rows (four queries) when it changes again; the cache does
# not grow with the number of finished tasks beyond this.
_CACHE_SIZE = 2_000
# DuckDB keeps what a connection's work allocated (its allocator's extents, blocks of the
# file it read) until the database is closed, so a long-lived connection grows with the file.
# The writer reopens its connection after this many applied events (about 500 tasks' worth;
# opening costs about 25 ms), which bounds the node's memory however many tasks finish, and
# keeps each checkpoint (and the memory it takes while it runs) small. Not more often than
# every _REOPEN_MIN_S: a catch-up applies thousands of events a second, and reopening after
# each of its batches made it about a quarter slower.
_REOPEN_EVENTS = 5_000
_REOPEN_MIN_S = 10.0
_json = msgspec.json.Encoder()
_json_decode = msgspec.json.Decoder(list[str | None]).decode


class GapError(Exception):
    """A batch does not start right after the checkpoint: the feed must re-read from there."""

    def __init__(self, checkpoint: int, got: int) -> None:
        super().__init__(f"projection at {checkpoint} was handed sequence {got}")
        self.checkpoint = checkpoint


class Projection:
    """A projection file and its single writer."""

    def __init__(self, path: Path | str, bulk: bool = False, allowed: Sequence[Path] = ()) -> None:
        """`bulk`: a fresh file being rebuilt, swapped in only once complete.

        In bulk mode every state stays in memory and the state rows are written once, by
        `finish()`; batches write only their `events` rows and the checkpoint. Nobody reads
        the file before `finish()`, and a rebuild that stops half-way is thrown away.
        """
        self.path = Path(path)
        self.allowed = tuple(allowed)
        # While a query answers as of a past sequence: the attached past state and that
        # sequence (projections/snapshots.py).
        self.as_of: tuple[str, int] | None = None
        self.con = open_db(self.path, self.allowed)
        self.bulk = bulk
        if bulk and checkpoint_of(self.con) != 0:
            raise ValueError(f"bulk mode needs a fresh file, {self.path} has events")
        self._writer: _BulkWriter | None = _BulkWriter(self) if bulk else None
        # Bulk mode replays a fresh file from the start, so every applied event id is known
        # here without asking DuckDB (about 115 bytes an event, for the rebuild's duration).
        self._bulk_ids: set[str] | None = set() if bulk else None
        # Event ids are time-ordered (UUIDv7): an id above every applied one cannot have been
        # applied, so only older ids (another node's clock behind, an old message published
        # again) are looked up, in the few row groups their range covers, instead of every
        # batch scanning an events table that grows with the log.
        self._max_event_id = self._applied_max_event_id()
        # The highest sequence among skipped messages: a task changed after it has none of
        # its own skipped messages later than its last event (queries.task_last_seq).
        self.max_skipped_seq = self._applied_max_skipped_seq()
        self.checkpoint = checkpoint_of(self.con)
        self._schemas = {
            t: arrow_schema(self.con, t)
            for t in (
                "lists",
                "tasks",
                "subtasks",
                "runs",
                "worktrees",
                "events",
                "skipped_messages",
            )
        }
        self._lists: OrderedDict[str, ListState] = OrderedDict()
        self._tasks: OrderedDict[str, TaskState] = OrderedDict()
        self._opened_at = self.checkpoint
        self._opened_at_s = time.monotonic()

    def finish(self) -> None:
        """Bulk mode: wait for the events rows, then write every state's rows in one go."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        lists, tasks = dict(self._lists), dict(self._tasks)
        # A bulk file is fresh: no state has rows yet, so nothing is deleted first.
        self._write(lists, tasks, _EventRows(), [], self.checkpoint, lists.keys() | tasks.keys())
        self.bulk = False
        self._bulk_ids = None
        self._max_event_id = self._applied_max_event_id()
        self.drop_cache()

    def drop_cache(self) -> None:
        """Forget the cached states; they are read back from the rows when next needed."""
        self._lists.clear()
        self._tasks.clear()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close(raise_errors=False)
            self._writer = None
        self.con.execute("CHECKPOINT")
        self.con.close()

    # --- reading state back (the command side validates against it) --------------------

    def task_state(self, task_id: str) -> TaskState | None:
        return self._load_tasks([task_id]).get(task_id)

    def list_state(self, list_id: str) -> ListState | None:
        return self._load_lists([list_id]).get(list_id)

    def _load_lists(self, ids: Iterable[str]) -> dict[str, ListState]:
        found = {i: self._lists[i] for i in ids if i in self._lists}
        missing = [i for i in ids if i not in found]
        if missing:
            for row in self._rows("lists", "id", missing):
                found[row["id"]] = msgspec.convert(row, ListState)
        return found

    def _load_tasks(self, ids: Iterable[str]) -> dict[str, TaskState]:
        ids = list(ids)
        found = {i: self._tasks[i] for i in ids if i in self._tasks}
        missing = [i for i in ids if i not in found]
        if not missing:
            return found
        children: dict[str, dict[str, Any]] = {i: {"subtasks": [], "runs": []} for i in missing}
        for row in self._rows("subtasks", "task_id", missing, "position"):
            children[row["task_id"]]["subtasks"].append(row)
        for row in self._rows("runs", "task_id", missing, "run_number"):
            children[row["task_id"]]["runs"].append(row)
        for row in self._rows("worktrees", "task_id", missing):
            children[row["task_id"]]["worktree"] = row
        for row in self._rows("tasks", "id", missing):
            found[row["id"]] = msgspec.convert({**row, **children[row["id"]]}, TaskState)
        return found

    def _rows(
        self, table: str, key: str, ids: list[str], order: str | None = None
    ) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM {table} WHERE {in_ids(key, len(ids))}"
        if order:
            sql += f" ORDER BY {order}"
        cur = self.con.execute(sql, [ids])
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # --- applying a batch -----------------------------------------------------------------

    def apply(self, batch: Sequence[ev.RawEvent]) -> int:
        """Apply the events after the checkpoint; returns the new checkpoint.

        Raises GapError when the first new event is not checkpoint + 1 (nothing is written).
        """
        # A batch makes many short-lived objects and frees them all at its end: the cyclic
        # collector would only slow it down (about 2x on decoding).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            checkpoint = self._apply(batch)
        except _DATA_ERRORS as exc:
            if self.bulk:
                raise
            checkpoint = self._isolate(batch, exc)
        finally:
            if was_enabled:
                gc.enable()
        if (
            checkpoint - self._opened_at >= _REOPEN_EVENTS
            and time.monotonic() - self._opened_at_s >= _REOPEN_MIN_S
            and not self.bulk
        ):
            self.reopen()
        return checkpoint

    def reopen(self) -> None:
        """Close the connection and open the file again (see _REOPEN_EVENTS)."""
        self.con.execute("CHECKPOINT")
        self.con.close()
        self.con = open_db(self.path, self.allowed)
        self._opened_at = self.checkpoint
        self._opened_at_s = time.monotonic()

    def _isolate(self, batch: Sequence[ev.RawEvent], exc: BaseException) -> int:
        """A batch whose rows cannot be stored: apply its events one at a time; one that
        still fails is skipped and recorded, so the projector never stalls on it."""
        fresh = [raw for raw in batch if raw.seq > self.checkpoint]
        if len(fresh) > 1:
            log.warning("batch at %d failed (%s): applying it event by event", fresh[0].seq, exc)
            for raw in fresh:
                self.apply([raw])
            return self.checkpoint
        raw = fresh[0]
        reason = f"cannot be projected: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        log.warning("skipped message seq=%d subject=%s: %s", raw.seq, raw.subject, reason)
        self._write({}, {}, _EventRows(), [(raw, reason)], raw.seq)
        self.checkpoint = raw.seq
        return raw.seq

    def _apply(self, batch: Sequence[ev.RawEvent]) -> int:
        fresh = [raw for raw in batch if raw.seq > self.checkpoint]
        if not fresh:
            return self.checkpoint
        expected = self.checkpoint + 1
        for raw in fresh:
            if raw.seq != expected:
                raise GapError(self.checkpoint, raw.seq)
            expected += 1

        if self.bulk:
            return self._apply_bulk(fresh)

        decoded: list[tuple[ev.RawEvent, ev.Envelope]] = []
        skipped: list[tuple[ev.RawEvent, str]] = []
        for raw in fresh:
            reason, env = _decode_checked(raw)
            if env is None:
                skipped.append((raw, reason))
            else:
                decoded.append((raw, env))
        known = self._seen_before([env.event_id for _, env in decoded]) if decoded else set()

        list_ids = {e.aggregate_id for _, e in decoded if e.aggregate == "list"}
        task_ids = {e.aggregate_id for _, e in decoded if e.aggregate == "task"}
        creations = {e.aggregate_id for _, e in decoded if type(e.event) in _CREATIONS}
        # An aggregate created in this batch has no rows to read back, unless a foreign
        # duplicate creation names an existing one: one query tells, instead of four.
        creations = creations - self._lists.keys() - self._tasks.keys()
        creations -= self._present("lists", "id", list_ids & creations)
        creations -= self._present("tasks", "id", task_ids & creations)
        list_ids -= creations
        task_ids -= creations
        lists = self._load_lists(list_ids)
        tasks = self._load_tasks(task_ids)
        lists_before, before = dict(lists), dict(tasks)
        # Aggregates with no state before this batch have no rows to delete when written.
        created = creations | (list_ids - lists.keys()) | (task_ids - tasks.keys())
        rows = _EventRows()
        for raw, env in decoded:
            if reason := _fold_unseen(raw, env, known, lists, tasks, rows):
                skipped.append((raw, reason))
        # A fold step always makes a new state: the changed ones are not those loaded.
        changed_lists = {i: s for i, s in lists.items() if lists_before.get(i) is not s}
        changed_tasks = {i: t for i, t in tasks.items() if before.get(i) is not t}

        new_checkpoint = fresh[-1].seq
        _warn_skipped(skipped)
        self._write(changed_lists, changed_tasks, rows, skipped, new_checkpoint, created, before)
        self.checkpoint = new_checkpoint
        if decoded:
            self._max_event_id = max(self._max_event_id, max(env.event_id for _, env in decoded))
        _remember(self._lists, changed_lists)
        _remember(self._tasks, changed_tasks)
        return new_checkpoint

    def _apply_bulk(self, fresh: list[ev.RawEvent]) -> int:
        """`_apply` for a bulk file, in one pass: every state is in memory (finish() writes
        their rows once) and every applied event id is known, so nothing is read back; the
        events rows and the checkpoint are written by a second thread while the next batch
        is folded."""
        assert self._writer is not None and self._bulk_ids is not None
        seen, lists, tasks = self._bulk_ids, self._lists, self._tasks
        rows = _EventRows()
        skipped: list[tuple[ev.RawEvent, str]] = []
        for raw in fresh:
            reason, env = _decode_checked(raw)
            if env is not None:
                reason = _fold_unseen(raw, env, seen, lists, tasks, rows)
            if reason:
                skipped.append((raw, reason))
        _warn_skipped(skipped)
        self._note_skipped(skipped)
        events = rows.table(self._schemas["events"]) if rows else None
        self._writer.submit(events, skipped, fresh[-1].seq)
        self.checkpoint = fresh[-1].seq
        return self.checkpoint

    def _present(
        self, table: str, column: str, ids: Iterable[str], ordered: bool = False
    ) -> set[str]:
        """Which of `ids` have a row in `table` (matched on `column`).

        `ordered`: the column's values grow with the row order (time-ordered ids), so a range
        filter lets DuckDB skip the row groups outside the ids' range.
        """
        wanted = list(ids)
        if not wanted:
            return set()
        where = in_ids(column, len(wanted))
        params: list[Any] = [wanted]
        if ordered:
            where = f"{column} BETWEEN ? AND ? AND {where}"
            params = [min(wanted), max(wanted), wanted]
        rows = self.con.execute(f"SELECT {column} FROM {table} WHERE {where}", params).fetchall()
        return {r[0] for r in rows}

    def _seen_before(self, ids: list[str]) -> set[str]:
        """Which of `ids` this projection applied already (bulk mode: from memory)."""
        if self._bulk_ids is not None:
            return {i for i in ids if i in self._bulk_ids}
        older = [i for i in ids if i <= self._max_event_id]
        return self._present("events", "event_id", older, ordered=True)

    def _note_skipped(self, skipped: list[tuple[ev.RawEvent, str]]) -> None:
        if skipped:
            self.max_skipped_seq = max(self.max_skipped_seq, max(raw.seq for raw, _ in skipped))

    def _applied_max_skipped_seq(self) -> int:
        row = self.con.execute("SELECT coalesce(max(seq), 0) FROM skipped_messages").fetchone()
        return int(row[0]) if row else 0

    def _applied_max_event_id(self) -> str:
        row = self.con.execute("SELECT max(event_id) FROM events").fetchone()
        return str(row[0]) if row and row[0] is not None else ""

    def _write(
        self,
        lists: dict[str, ListState],
        tasks: dict[str, TaskState],
        rows: _EventRows,
        skipped: list[tuple[ev.RawEvent, str]],
        checkpoint: int,
        created: frozenset[str] | set[str] = frozenset(),
        before: dict[str, TaskState] | None = None,
    ) -> None:
        """Rows of the changed states, events rows and checkpoint, in one transaction.

        `created`: aggregates created in this batch, so without rows to delete first.
        `before`: the tasks' states before the batch; a child table (sub-tasks, runs,
        worktree) is rewritten only for tasks whose children changed (the fold keeps an
        unchanged tuple as the very same object), which saves statements on every batch.
        """
        con = self.con
        con.begin()
        try:
            if lists:
                old = [i for i in lists if i not in created]
                self._replace("lists", list(lists.values()), old)
            if tasks:
                states = list(tasks.values())
                old = [t.id for t in states if t.id not in created]
                self._replace("tasks", states, old)
                prior = before or {}
                for table, field in (
                    ("subtasks", "subtasks"),
                    ("runs", "runs"),
                    ("worktrees", "worktree"),
                ):
                    moved = [
                        t
                        for t in states
                        if t.id not in prior or getattr(prior[t.id], field) is not getattr(t, field)
                    ]
                    if before is None:
                        moved = states
                    rows_of: list[Any] = []
                    for t in moved:
                        value = getattr(t, field)
                        if isinstance(value, tuple):
                            rows_of.extend(value)
                        elif value is not None:
                            rows_of.append(value)
                    self._replace_children(
                        table, [t.id for t in moved if t.id not in created], rows_of
                    )
            self._write_events(
                con, rows.table(self._schemas["events"]) if rows else None, skipped, checkpoint
            )
            con.commit()
            self._note_skipped(skipped)
        except BaseException:
            con.rollback()
            # The caches may hold states of the failed batch: forget them all.
            self.drop_cache()
            raise

    def _write_events(
        self,
        con: duckdb.DuckDBPyConnection,
        events: pa.Table | None,
        skipped: list[tuple[ev.RawEvent, str]],
        checkpoint: int,
    ) -> None:
        """The flat events rows, the skipped messages and the checkpoint (in con's txn)."""
        if events is not None:
            _insert_arrow(con, "events", events)
        if skipped:
            now = datetime.now(UTC)
            cols: dict[str, list[Any]] = {
                "seq": [r.seq for r, _ in skipped],
                "subject": [r.subject for r, _ in skipped],
                "reason": [reason for _, reason in skipped],
                "recorded_at": [now] * len(skipped),
            }
            _insert_arrow(
                con, "skipped_messages", _arrow_table(cols, self._schemas["skipped_messages"])
            )
        con.execute("UPDATE projection_checkpoint SET seq = ? WHERE name = 'main'", [checkpoint])

    def _replace(self, table: str, states: Sequence[msgspec.Struct], old_ids: list[str]) -> None:
        """Rows of `states` (keyed by `id`); rows of `old_ids` are deleted first."""
        if old_ids:
            self.con.execute(f"DELETE FROM {table} WHERE {in_ids('id', len(old_ids))}", [old_ids])
        self._insert(table, self._columns(table, states))

    def _replace_children(
        self, table: str, old_task_ids: list[str], rows: Sequence[msgspec.Struct]
    ) -> None:
        if old_task_ids:
            self.con.execute(
                f"DELETE FROM {table} WHERE {in_ids('task_id', len(old_task_ids))}",
                [old_task_ids],
            )
        if rows:
            self._insert(table, self._columns(table, rows))

    def _insert(self, table: str, cols: dict[str, list[Any]]) -> None:
        _insert_arrow(self.con, table, _arrow_table(cols, self._schemas[table]))

    def _columns(self, table: str, states: Sequence[msgspec.Struct]) -> dict[str, Any]:
        """The table's columns of `states` (all of one struct type): each state's fields as
        a tuple, transposed, where a getattr per field and state cost a rebuild's last step
        three times as much."""
        names = self._schemas[table].names
        if not states:
            return {name: [] for name in names}
        fields = type(states[0]).__struct_fields__
        values = list(zip(*map(astuple, states), strict=True))
        return {name: values[fields.index(name)] for name in names}


def _fold_unseen(
    raw: ev.RawEvent,
    env: ev.Envelope,
    seen: set[str],
    lists: dict[str, ListState],
    tasks: dict[str, TaskState],
    rows: _EventRows,
) -> str:
    """Fold `env` into its aggregate's state in `lists` or `tasks` and add its events row;
    returns "" then, or why it was skipped (nothing changed). An event id joins `seen`
    once its event is applied (has an events row), not when the fold rejects it."""
    if env.event_id in seen:
        return f"duplicate event id {env.event_id}"
    agg_id = env.aggregate_id
    try:
        aggregate = type(env.event).AGGREGATE
        if aggregate == "list":
            lists[agg_id] = fold_list(lists.get(agg_id), env, raw.seq)
            rows.add((raw, env, agg_id))
        elif aggregate == "log":  # checkpoints: in the events table, folded into no state
            rows.add((raw, env, None))
        else:
            task = tasks[agg_id] = fold_task(tasks.get(agg_id), env, raw.seq)
            rows.add((raw, env, task.list_id))
    except ValueError as exc:
        return str(exc)
    seen.add(env.event_id)
    return ""


def _warn_skipped(skipped: list[tuple[ev.RawEvent, str]]) -> None:
    for raw, reason in skipped:
        log.warning("skipped message seq=%d subject=%s: %s", raw.seq, raw.subject, reason)


def _decode_checked(raw: ev.RawEvent) -> tuple[str, ev.Envelope | None]:
    try:
        env = ev.decode(raw.data)
    except ev.DecodeError as exc:
        if ev.parse_event_subject(raw.subject) is None:
            return "not an event subject", None
        return str(exc), None
    cls = type(env.event)
    if raw.subject != f"claudedo.evt.{cls.AGGREGATE}.{env.aggregate_id}.{cls.__name__}":
        return "subject does not match the event", None
    return "", env


class _BulkWriter:
    """Writes bulk batches' events rows and checkpoints on its own cursor, one batch behind."""

    def __init__(self, projection: Projection) -> None:
        self._projection = projection
        self._cursor = projection.con.cursor()
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bulk-writer", daemon=True)
        self._thread.start()

    def submit(
        self,
        events: pa.Table | None,
        skipped: list[tuple[ev.RawEvent, str]],
        checkpoint: int,
    ) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((events, skipped, checkpoint))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            events, skipped, checkpoint = item
            if self._error is None:
                try:
                    self._cursor.begin()
                    self._projection._write_events(self._cursor, events, skipped, checkpoint)
                    self._cursor.commit()
                except BaseException as exc:
                    self._error = exc
                    with contextlib.suppress(Exception):
                        self._cursor.rollback()

    def close(self, raise_errors: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        self._cursor.close()
        if raise_errors and self._error is not None:
            raise self._error


class _EventRows:
    """The flat `events` rows of a batch, from the decoded envelopes.

    Each applied event is noted with one append; the columns are built at the end, one list
    comprehension each (fourteen appends an event cost a rebuild twice as much)."""

    def __init__(self) -> None:
        self._applied: list[tuple[ev.RawEvent, ev.Envelope, str | None]] = []
        self.add = self._applied.append

    def __len__(self) -> int:
        return len(self._applied)

    def table(self, schema: pa.Schema) -> pa.Table:
        applied = self._applied
        envs = [env for _, env, _ in applied]
        types = [type(env.event) for env in envs]
        aggregates = [cls.AGGREGATE for cls in types]
        columns: dict[str, Any] = {
            "seq": [raw.seq for raw, _, _ in applied],
            "event_id": [env.event_id for env in envs],
            "subject": [raw.subject for raw, _, _ in applied],
            "type": [cls.__name__ for cls in types],
            "schema_version": [env.schema_version for env in envs],
            "aggregate": aggregates,
            "aggregate_id": [env.aggregate_id for env in envs],
            "task_id": [
                env.aggregate_id if agg == "task" else None
                for env, agg in zip(envs, aggregates, strict=True)
            ],
            "list_id": [list_id for _, _, list_id in applied],
            "occurred_at": [env.occurred_at for env in envs],
            "node": [env.node_id for env in envs],
            "actor": [env.actor for env in envs],
            "correlation_id": [env.correlation_id for env in envs],
        }
        # UTF-8 bytes straight to Arrow, which checks them, without a str in between.
        payloads = [_json.encode(env.event) for env in envs]
        columns["payload"] = pa.array(payloads, type=pa.binary()).cast(pa.string())
        return _arrow_table(columns, schema)


def _arrow_table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """`columns` (lists, or Arrow arrays already typed) as an Arrow table in the schema's
    column order (see _insert_arrow).

    Time columns go through their ISO 8601 text: pyarrow converts a zone-aware datetime
    object by calling its utcoffset(), about four times slower than msgspec writing the
    text and Arrow's C++ parsing it (all of them are zone-aware: events.UtcTime)."""
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_timestamp(field.type) and values:
            texts = _json_decode(_json.encode(values))
            arrays.append(pc.cast(pa.array(texts, type=pa.string()), field.type))
        elif isinstance(values, pa.Array):
            arrays.append(values)
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _insert_arrow(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append `rows` to `table`; their schema is the table's own (store.arrow_schema), so
    the columns match by position. One statement, where registering the Arrow table as a
    view, inserting from it and unregistering it took three (about a tenth of a live batch's
    cost)."""
    con.from_arrow(rows).insert_into(table)


def _remember(cache: OrderedDict[str, _S], changed: dict[str, _S]) -> None:
    for key, value in changed.items():
        cache[key] = value
        cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


# Re-exported for type users of the child rows.
__all__ = ["GapError", "Projection", "RunState", "SubtaskState", "TaskState", "WorktreeState"]
