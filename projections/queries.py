"""Queries over the projection: lookups by id, prefix or name, filtered listings, audit, SQL."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import duckdb
import msgspec

from events._ids import is_aggregate_id
from events.errors import Ambiguous, Invalid, NotFound
from projections.projector import Projection
from projections.state import STATUSES, ListState, TaskState
from projections.store import in_ids

TASK_COLUMNS = (
    "id, list_id, title, description, status, model, system_prompt, agent_path, "
    "permission_mode, allowed_tools, max_budget_usd, max_turns, timeout_s, result, error, cause, "
    "cancel_requested, claimed_by, slot, run_count, created_at, updated_at, queued_at, "
    "started_at, finished_at, review, archived_at, deleted_at, "
    "(SELECT l.name FROM lists l WHERE l.id = tasks.list_id) AS list_name"
)
# Candidates an ambiguous reference names in its error, as git lists them.
_CANDIDATES = 5


def jsonable(value: Any) -> Any:
    """A value as JSON has it; timestamps are ISO 8601 with an explicit offset."""
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo else value.isoformat() + "+00:00"
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def shown(ref: str, width: int = 60) -> str:
    """A reference as an error message shows it: one line, control characters escaped (so
    a terminal prints them, never obeys them), and at most `width` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in ref)
    return text if len(text) <= width else text[: width - 1] + "…"


def resolve_list(p: Projection, ref: str) -> ListState:
    """A list by exact id, exact name, or unique id prefix."""
    ref = ref.strip()
    if not ref:
        raise Invalid("list reference is empty")
    rows = p.con.execute(
        "SELECT id, name, deleted_at IS NULL FROM lists "
        "WHERE id = $r OR name = $r OR starts_with(id, lower($r))",
        {"r": ref},
    ).fetchall()
    # A deleted list's name is free again: the name then means the list that took it.
    exact = [r for r in rows if r[0] == ref] or [r for r in rows if r[1] == ref and r[2]]
    exact = exact or [r for r in rows if r[1] == ref]
    chosen = exact if exact else rows
    if not chosen:
        raise NotFound(f"list {shown(ref)} not found")
    if len(chosen) > 1:
        raise Ambiguous(_ambiguous("list", ref, sorted(chosen)))
    state = p.list_state(chosen[0][0])
    assert state is not None
    return state


_ID_LENGTH = 36  # a UUID in its text form


def resolve_task(p: Projection, ref: str) -> TaskState:
    """A task by exact id or unique id prefix (like git). A reference that cannot begin an id
    (`..`, a slash, a NUL, longer than an id: see events/_ids.py) is not found, unsearched."""
    ref = ref.strip().lower()
    if not ref:
        raise Invalid("task id is empty")
    if not is_aggregate_id(ref):
        raise NotFound(f"task {shown(ref)} not found")
    if len(ref) == _ID_LENGTH:
        # A whole id (how programs and the node itself name tasks): no prefix search.
        found = p.task_state(ref)
        if found is None:
            raise NotFound(f"task {ref} not found")
        return found
    rows = p.con.execute(
        "SELECT id, title FROM tasks WHERE starts_with(id, $r) ORDER BY id LIMIT $n",
        {"r": ref, "n": _CANDIDATES + 1},
    ).fetchall()
    if not rows:
        raise NotFound(f"task {ref} not found")
    if len(rows) > 1:
        raise Ambiguous(_ambiguous("id", ref, rows))
    state = p.task_state(rows[0][0])
    assert state is not None
    return state


def _ambiguous(what: str, ref: str, rows: list[Any]) -> str:
    """`ambiguous id 'ab': ab12cd34 (title), ab34ef56 (title)`, as git names the candidates
    of a short hash; at most _CANDIDATES of them, then how many more."""
    named = [f"{row[0][:8]}… ({shown(row[1], 40)})" for row in rows[:_CANDIDATES]]
    more = "" if len(rows) <= _CANDIDATES else ", and more: give more characters"
    return f"ambiguous {what} '{shown(ref)}': {', '.join(named)}{more}"


def lists_all(p: Projection, archived: bool = False) -> list[dict[str, Any]]:
    """Every list, oldest first; archived and deleted ones only with `archived`."""
    where = "" if archived else "WHERE l.archived_at IS NULL AND l.deleted_at IS NULL "
    return _dicts(
        p.con.execute(
            "SELECT l.id, l.name, l.dir, l.model, l.system_prompt, l.agent_path, "
            "l.permission_mode, l.allowed_tools, l.max_budget_usd, l.max_turns, l.timeout_s, "
            "l.created_at, l.updated_at, l.archived_at, l.deleted_at, "
            "count(t.id) FILTER (WHERE t.deleted_at IS NULL) AS task_count "
            f"FROM lists l LEFT JOIN tasks t ON t.list_id = l.id {where}"
            "GROUP BY ALL ORDER BY l.created_at, l.id"
        )
    )


# Tasks shown unless archived ones are asked for: neither they nor their list put away.
SHOWN = (
    "archived_at IS NULL AND deleted_at IS NULL AND list_id NOT IN "
    "(SELECT id FROM lists WHERE archived_at IS NOT NULL OR deleted_at IS NOT NULL)"
)
# The same, of tasks `t` joined with their lists `l`.
SHOWN_T = (
    "t.archived_at IS NULL AND t.deleted_at IS NULL "
    "AND l.archived_at IS NULL AND l.deleted_at IS NULL"
)


def list_holds(p: Projection, list_id: str) -> tuple[int, int]:
    """(tasks queued or running, tasks with unmerged commits) of a list's undeleted tasks:
    what deleting it would hide."""
    row = p.con.execute(
        "SELECT count(*) FILTER (WHERE t.status IN ('queued', 'claimed', 'running')), "
        " count(*) FILTER (WHERE w.kind = 'worktree' AND w.status = 'active' "
        "  AND w.commit_count > 0) "
        "FROM tasks t LEFT JOIN worktrees w ON w.task_id = t.id "
        "WHERE t.list_id = ? AND t.deleted_at IS NULL",
        [list_id],
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def list_row(p: Projection, list_id: str) -> dict[str, Any]:
    rows = [r for r in lists_all(p, archived=True) if r["id"] == list_id]
    if not rows:
        raise NotFound(f"list {list_id} not found")
    return rows[0]


def lists_last_seq(p: Projection) -> int:
    """The last sequence on any list subject: the guard of name-unique list commands.

    Skipped messages count too: the log's concurrency check sees every message on a subject.
    """
    row = p.con.execute(
        "SELECT greatest((SELECT coalesce(max(last_seq), 0) FROM lists),"
        " (SELECT coalesce(max(seq), 0) FROM skipped_messages"
        "  WHERE starts_with(subject, 'claudedo.evt.list.')))"
    ).fetchone()
    return int(row[0]) if row else 0


def task_last_seq(p: Projection, task: TaskState) -> int:
    """The last sequence on the task's subjects, its skipped messages included."""
    if p.max_skipped_seq <= task.last_seq:
        return task.last_seq  # no skipped message after the task's last event (the usual)
    row = p.con.execute(
        "SELECT coalesce(max(seq), 0) FROM skipped_messages WHERE starts_with(subject, ?)",
        [f"claudedo.evt.task.{task.id}."],
    ).fetchone()
    return max(task.last_seq, int(row[0]) if row else 0)


def check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise Invalid(f"unknown status {status!r} (one of: {', '.join(STATUSES)})")


def tasks_filtered(
    p: Projection,
    list_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    after: str | None = None,
    archived: bool = False,
) -> list[dict[str, Any]]:
    """Tasks of one list and/or one status, oldest first (by creation, then id); all of them
    unless `limit`. `after`: only the tasks after that one, the cursor of the next page.
    Archived and deleted tasks, and those of archived or deleted lists, only with `archived`."""
    check_status(status)
    where = "($list IS NULL OR list_id = $list) AND ($status IS NULL OR status = $status)"
    if not archived:
        where += f" AND {SHOWN}"
    params: dict[str, Any] = {"list": list_id, "status": status}
    if after is not None:
        row = p.con.execute("SELECT created_at FROM tasks WHERE id = ?", [after]).fetchone()
        if row is None:
            raise NotFound(f"task {shown(after)} not found")
        where += " AND (created_at > $at OR (created_at = $at AND id > $after))"
        params.update(at=row[0], after=after)
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY created_at, id"
    if limit is not None:
        sql += " LIMIT $limit OFFSET $offset"
        params.update(limit=limit, offset=offset)
    elif offset:
        sql += " OFFSET $offset"
        params["offset"] = offset
    return _dicts(p.con.execute(sql, params))


def task_detail(p: Projection, task_id: str) -> dict[str, Any]:
    """The task row with its sub-tasks, runs and worktree."""
    return task_details(p, [task_id])[0]


def task_details(p: Projection, task_ids: list[str]) -> list[dict[str, Any]]:
    """`task_detail` of each id, in order, with one query per table for all of them."""
    ids = [task_ids]
    match = in_ids("task_id", len(task_ids))
    by_id = {
        row["id"]: row
        for row in _dicts(
            p.con.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {in_ids('id', len(task_ids))}",
                ids,
            )
        )
    }
    for task_id in task_ids:
        if task_id not in by_id:
            raise NotFound(f"task {task_id} not found")
    for task in by_id.values():
        task["subtasks"], task["runs"], task["worktree"] = [], [], None
    children = (
        "SELECT task_id, subtask_id, position, title, done FROM subtasks "
        f"WHERE {match} ORDER BY task_id, position",
        f"SELECT * FROM runs WHERE {match} ORDER BY task_id, run_number",
    )
    for field, sql in zip(("subtasks", "runs"), children, strict=True):
        for row in _dicts(p.con.execute(sql, ids)):
            by_id[row.pop("task_id")][field].append(row)
    for row in _dicts(p.con.execute(f"SELECT * FROM worktrees WHERE {match}", ids)):
        by_id[row.pop("task_id")]["worktree"] = row
    return [by_id[t] for t in task_ids]


def seq_as_of(p: Projection, as_of: int | datetime) -> int:
    """The stream sequence `as_of` names: a sequence (checked against the log), or the last
    one before a time (the events that occurred after it are not yet there)."""
    if isinstance(as_of, int):
        if as_of > p.checkpoint:
            raise Invalid(f"--as-of {as_of}: the log holds {p.checkpoint} events")
        return as_of
    row = p.con.execute("SELECT min(seq) FROM events WHERE occurred_at > ?", [as_of]).fetchone()
    first_after = row[0] if row else None
    return p.checkpoint if first_after is None else int(first_after) - 1


def skipped_seqs(p: Projection, until_seq: int) -> set[int]:
    """The sequences up to `until_seq` the projection skipped (recorded, folded into
    nothing)."""
    rows = p.con.execute("SELECT seq FROM skipped_messages WHERE seq <= ?", [until_seq])
    return {int(r[0]) for r in rows.fetchall()}


def audit(
    p: Projection, task_id: str, after_seq: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Every event of the task in log order (after `after_seq`, at most `limit`: a page)."""
    sql = (
        "SELECT seq, occurred_at, type, node, actor, correlation_id, event_id, payload "
        "FROM events WHERE task_id = ? AND seq > ? ORDER BY seq"
    )
    params: list[Any] = [task_id, after_seq]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = _dicts(p.con.execute(sql, params))
    for row in rows:
        payload = msgspec.json.decode(row["payload"])
        payload.pop("type", None)
        row["payload"] = payload
    return rows


_READ_ONLY = frozenset({"SELECT", "EXPLAIN"})
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


def run_sql(
    p: Projection, query: str, timeout_s: float = 30.0, convert: bool = True
) -> tuple[list[str], list[Any]]:
    """Run one read-only statement; anything that could write is refused before it runs.

    A statement still running after `timeout_s` is interrupted: the projector serves every
    other query and write, and must not be held by one analysis. `convert` False: the rows as
    DuckDB gives them, for `jsonable_rows` to convert outside the projector, page by page.
    """
    try:
        statements = p.con.extract_statements(query)
    except duckdb.Error as exc:
        raise Invalid(f"SQL error: {_one_line(exc)}") from None
    if len(statements) != 1:
        raise Invalid(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _READ_ONLY:
        raise Invalid(f"only read-only queries are allowed (this is {kind})")
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs what it explains: only a query may be explained.
        explained = _EXPLAIN.sub("", query, count=1)
        try:
            inner = p.con.extract_statements(explained)
        except duckdb.Error as exc:
            raise Invalid(f"SQL error: {_one_line(exc)}") from None
        if len(inner) != 1 or inner[0].type.name != "SELECT":
            what = inner[0].type.name if len(inner) == 1 else "several statements"
            raise Invalid(f"only read-only queries are allowed (this explains {what})")
    cur = p.con.cursor()
    timer = threading.Timer(timeout_s, cur.interrupt)
    try:
        if p.as_of is not None:  # temporary views are the connection's own
            from projections.snapshots import views_on

            views_on(cur, *p.as_of)
        cur.execute("BEGIN TRANSACTION READ ONLY")
        timer.start()
        cur.execute(query)
        names = [d[0] for d in cur.description or ()]
        rows = cur.fetchall()
        return names, jsonable_rows(rows) if convert else rows
    except duckdb.InterruptException:
        raise Invalid(f"query ran longer than {timeout_s:g}s and was stopped") from None
    except duckdb.Error as exc:
        raise Invalid(f"SQL error: {_one_line(exc)}") from None
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()


def jsonable_rows(rows: list[Any]) -> list[list[Any]]:
    """Rows of `run_sql(convert=False)` as JSON has them."""
    return [[jsonable(v) for v in row] for row in rows]


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def queued_task_ids(p: Projection, limit: int, offset: int = 0) -> list[str]:
    """Queued tasks in queue order (first queued first)."""
    rows = p.con.execute(
        "SELECT id FROM tasks WHERE status = 'queued' ORDER BY queued_at, id LIMIT ? OFFSET ?",
        [limit, offset],
    ).fetchall()
    return [r[0] for r in rows]


def tasks_held_by(p: Projection, node_id: str) -> list[tuple[str, str, bool]]:
    """(id, status, cancel_requested) of the tasks a node claimed and has not settled."""
    rows = p.con.execute(
        "SELECT id, status, cancel_requested FROM tasks "
        "WHERE claimed_by = ? AND status IN ('claimed', 'running') ORDER BY id",
        [node_id],
    ).fetchall()
    return [(r[0], r[1], bool(r[2])) for r in rows]


def tasks_held_by_others(p: Projection, alive: list[str]) -> list[tuple[str, str]]:
    """(id, node) of the unsettled tasks held by a node not in `alive`."""
    rows = p.con.execute(
        "SELECT id, claimed_by FROM tasks WHERE status IN ('claimed', 'running') "
        "AND NOT list_contains(?::VARCHAR[], claimed_by) ORDER BY id",
        [alive],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


RUN_FIELDS = (
    "run_number, is_retry, is_continue, session_id, exit_code, cause, success, turn_count, "
    "tokens_in, tokens_out, cache_read_tokens, cache_creation_tokens, cost_usd, duration_ms, "
    "cli_version, model, permission_mode, resume_session_id, result, error, log_path, "
    "line_count, transcript_sha256, node_id, slot, started_at, finished_at, terminal_reason, "
    "permission_denials"
)


def runs_of_task(p: Projection, task_id: str) -> list[dict[str, Any]]:
    """Every run of a task, first first; `permission_denials` as the list of refused calls."""
    rows = _dicts(
        p.con.execute(
            f"SELECT {RUN_FIELDS} FROM runs WHERE task_id = ? ORDER BY run_number", [task_id]
        )
    )
    for row in rows:
        denials = row["permission_denials"]
        row["permission_denials"] = json.loads(denials) if denials else []
    return rows


def board(p: Projection) -> dict[str, Any]:
    """Tasks at work (by node and slot) with their latest run and cost so far; status counts."""
    working = _dicts(
        p.con.execute(
            "SELECT t.id, t.title, t.status, t.claimed_by AS node_id, t.slot, t.started_at, "
            " (SELECT max(run_number) FROM runs r WHERE r.task_id = t.id) AS run_number, "
            " (SELECT coalesce(sum(cost_usd), 0) FROM runs r WHERE r.task_id = t.id) AS cost_usd "
            "FROM tasks t WHERE t.status IN ('claimed', 'running') "
            "ORDER BY t.claimed_by, t.slot, t.id"
        )
    )
    shown_counts = f"SELECT status, count(*) FROM tasks WHERE {SHOWN} GROUP BY status"
    counts = dict(p.con.execute(shown_counts).fetchall())
    cost_today = p.con.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM runs "
        "WHERE started_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    ).fetchone()
    return {
        "working": working,
        "counts": {s: int(counts.get(s, 0)) for s in STATUSES},
        "cost_today_usd": float(cost_today[0]) if cost_today else 0.0,
    }


# The board's columns (draft, queued, running, done, failed, cancelled; claimed shows as
# running) and how each is ordered: waiting work in queue order, running by start, finished
# work newest first.
BOARD_COLUMNS = {
    "draft": ("status = 'draft'", "created_at, id"),
    "queued": ("status = 'queued'", "queued_at, created_at, id"),
    "running": ("status IN ('claimed', 'running')", "started_at NULLS LAST, queued_at, id"),
    "done": ("status = 'done'", "finished_at DESC NULLS LAST, id DESC"),
    "failed": ("status = 'failed'", "finished_at DESC NULLS LAST, id DESC"),
    "cancelled": ("status = 'cancelled'", "finished_at DESC NULLS LAST, id DESC"),
}
BOARD_CARD_COLUMNS = (
    "t.id, t.list_id, l.name AS list_name, t.title, t.status, t.cause, "
    "t.cancel_requested, t.run_count, t.created_at, t.started_at, t.finished_at, t.review"
)


def board_columns(
    p: Projection, per_column: int, column: str | None = None, list_id: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The first `per_column` cards of each board column (or of one), with the list's name."""
    if column is not None and column not in BOARD_COLUMNS:
        raise Invalid(f"unknown column {shown(column)} (one of: {', '.join(BOARD_COLUMNS)})")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (where, order) in BOARD_COLUMNS.items():
        if column is not None and name != column:
            continue
        out[name] = _dicts(
            p.con.execute(
                f"SELECT {BOARD_CARD_COLUMNS} FROM tasks t LEFT JOIN lists l ON l.id = t.list_id "
                f"WHERE {where} AND {SHOWN_T} AND ($list IS NULL OR t.list_id = $list) "
                f"ORDER BY {order} LIMIT $limit",
                {"list": list_id, "limit": per_column},
            )
        )
    return out


# What `run_stats` groups by, each with its view (`run_stats_by_<it>`, projections/sql/002).
STATS_DIMENSIONS = ("model", "list", "day")


def run_stats(
    p: Projection, by: str = "model", since: datetime | None = None
) -> list[dict[str, Any]]:
    """The runs' figures by model, list or UTC day (the `run_stats_by_*` views), counting the
    runs started at or after `since` (None: all of them)."""
    if by not in STATS_DIMENSIONS:
        raise Invalid(f"cannot group by {shown(by)} (one of: {', '.join(STATS_DIMENSIONS)})")
    return _dicts(p.con.execute(f"FROM run_stats_by_{by}_since(?::TIMESTAMPTZ)", [since]))


def tasks_with_worktrees(p: Projection) -> list[str]:
    """Ids of the tasks with a git worktree not discarded, oldest worktree first."""
    rows = p.con.execute(
        "SELECT task_id FROM worktrees WHERE kind = 'worktree' AND status <> 'discarded' "
        "ORDER BY created_at, task_id"
    ).fetchall()
    return [r[0] for r in rows]


def reviews_held_by(p: Projection, node_id: str) -> list[str]:
    """Ids of the tasks whose merge or discard `node_id` began and has not ended."""
    rows = p.con.execute(
        "SELECT id FROM tasks WHERE review_node = ? ORDER BY id", [node_id]
    ).fetchall()
    return [r[0] for r in rows]


def reviews_held_by_others(p: Projection, alive: list[str]) -> list[tuple[str, str]]:
    """(id, node) of the merges or discards begun by a node not in `alive`."""
    rows = p.con.execute(
        "SELECT id, review_node FROM tasks WHERE review_node IS NOT NULL "
        "AND NOT list_contains(?::VARCHAR[], review_node) ORDER BY id",
        [alive],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
