"""The facts a fixture log's projection holds (tests/fixtures/logs/): what every later
version must still derive from it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from claudedo_actors.audit.export import ExportSource
from events.log import RawEvent
from projections import Projection
from projections.rebuild import rebuild_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs"

# Facts by name: a query over the projection, its rows in a stable order.
QUERIES = {
    "lists": "SELECT name, model, system_prompt, max_turns, dir IS NOT NULL AS has_dir "
    "FROM lists ORDER BY name",
    "tasks": "SELECT t.title, l.name AS list, t.status, t.cause, t.max_turns, "
    "(SELECT count(*) FROM subtasks s WHERE s.task_id = t.id) AS subtasks, "
    "(SELECT count(*) FROM subtasks s WHERE s.task_id = t.id AND s.done) AS ticked "
    "FROM tasks t JOIN lists l ON l.id = t.list_id ORDER BY t.title",
    "runs": "SELECT t.title, r.run_number, r.success, r.cause, r.is_retry, r.is_continue, "
    "r.turn_count, r.tokens_in, r.tokens_out, r.cost_usd "
    "FROM runs r JOIN tasks t ON t.id = r.task_id ORDER BY t.title, r.run_number",
    "worktrees": "SELECT t.title, w.kind, w.status, w.commit_count, w.files_changed, "
    "w.merge_commit IS NOT NULL AS merged, w.kept_ref IS NOT NULL AS kept "
    "FROM worktrees w JOIN tasks t ON t.id = w.task_id ORDER BY t.title",
    "events": "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type",
    "skipped": "SELECT count(*) AS n FROM skipped_messages",
}


def facts(p: Projection) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, sql in QUERIES.items():
        cur = p.con.execute(sql)
        names = [d[0] for d in cur.description or ()]
        out[name] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out


def project(batches: Iterable[list[RawEvent]], path: Path, bulk: bool = True) -> Projection:
    """A projection of `batches`: rebuilt in bulk, or applied batch by batch as a live
    node applies what comes."""
    if bulk:
        rebuild_file(path, batches)
        return Projection(path)
    p = Projection(path)
    for batch in batches:
        for i in range(0, len(batch), 7):
            p.apply(batch[i : i + 7])
    return p


def facts_of_export(directory: Path, db: Path) -> dict[str, list[dict[str, Any]]]:
    p = project(ExportSource(directory).batches(), db)
    try:
        return facts(p)
    finally:
        p.close()
