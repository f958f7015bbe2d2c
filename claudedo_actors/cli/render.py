"""Human output of the CLI: readable tables (rich), every user text shown literally.

Markup and emoji codes are off, so a title like `[red]x[/red]` or `:smile:` prints as typed;
control characters (an escape sequence in an agent's output) are shown escaped, never sent to
the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from claudedo_actors.cli.literal import plain
from events import AGENT_SETTINGS


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed stdout ends the command as the CLI ends it (commands.main), quietly and
        with the same status whatever printed last; rich's own exits with 1."""
        self.quiet = True
        raise BrokenPipeError


# Piped output is never wrapped: rich would cut it at 80 columns (its width without a
# terminal), and a program reading it wants whole lines.
_PIPED_WIDTH = 100_000
_console = _Console(
    highlight=False,
    markup=False,
    emoji=False,
    soft_wrap=not sys.stdout.isatty(),
    width=None if sys.stdout.isatty() else _PIPED_WIDTH,
)


def _say(line: str) -> None:
    """One line saying what a command did (its values are shown literally already)."""
    _console.file.write(line + "\n")


def _short(value: Any, width: int = 60) -> str:
    """One line of at most `width` characters: whitespace collapsed, the rest escaped."""
    if value is None:
        return ""
    text = plain(" ".join(str(value).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def live(first: Table) -> Live:
    """A live display on this module's console (rich's own would read markup in cells)."""
    return Live(first, console=_console, auto_refresh=False)


def _time(value: str | None) -> str:
    """A timestamp to the second, marked UTC (the JSON output keeps the full ISO form)."""
    return "" if not value else value[:19].replace("T", " ") + "Z"


def info(data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "node_id",
        "nats_url",
        "nats_user",
        "stream",
        "last_seq",
        "checkpoint_seq",
        "slots",
        "home",
        "pid",
    ):
        table.add_row(key, _short(data.get(key, ""), 200))
    _console.print(table)


def lists(rows: list[dict[str, Any]]) -> None:
    if not rows:
        _console.print("no lists yet (add one: claudedo list add NAME --dir REPO)")
        return
    table = Table("id", "name", "dir", "model", "tasks")
    for r in rows:
        gone = " (archived)" if r.get("archived_at") else ""
        gone = " (deleted)" if r.get("deleted_at") else gone
        table.add_row(
            r["id"][:8],
            _short(r["name"], 200) + gone,
            _short(r["dir"], 200) or "(sandbox)",
            _short(r["model"]),
            str(r.get("task_count", "")),
        )
    _console.print(table)


def _heading(kind: str, row: dict[str, Any], name: str) -> Text:
    """`task 3f2a9c1e <title in bold>  (<id>)`: the name literal, whatever it contains."""
    return Text.assemble(
        f"{kind} {row['id'][:8]} ", (_short(row[name], 200), "bold"), f"  ({row['id']})"
    )


def list_one(row: dict[str, Any]) -> None:
    _console.print(_heading("list", row, "name"))
    for key in ("dir", *AGENT_SETTINGS):
        if row.get(key) is not None:
            _console.print(f"  {key}: {_short(row[key], 100)}")


Rows = list[dict[str, Any]]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _line(cells: Iterable[str], widths: list[int]) -> str:
    return "   ".join(set_cell_size(c, w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _page_tables(
    pages: Iterable[list[Any]],
    columns: list[tuple[str, int | None]],
    cells: Callable[[Any], list[str]],
    flexible_max: int = 50,
) -> int:
    """Print each page of a listing as it arrives, in columns of fixed widths (the header
    once, before the first row), so the pages read as one table. The one column of width
    None takes the room left, at most `flexible_max`. Returns how many rows were printed.

    Lines are written as text, not through rich's tables: their cells are plain already,
    and 100,000 rows print in seconds instead of minutes."""
    fixed = sum(w for _, w in columns if w)
    flexible = max(10, min(flexible_max, _console.width - fixed - 3 * (len(columns) - 1)))
    widths = [w or flexible for _, w in columns]
    return _print_rows(pages, [name for name, _ in columns], widths, cells)


def _print_rows(
    pages: Iterable[list[Any]],
    names: list[str],
    widths: list[int] | Callable[[list[Any]], list[int]],
    cells: Callable[[Any], list[str]],
) -> int:
    out = _console.file
    count = 0
    for page in pages:
        if not page:
            continue
        rows = [cells(row) for row in page]
        if not count:
            if callable(widths):
                widths = widths(rows)
            header = _line(names, widths)
            out.write(f"{header}\n{'─' * cell_len(header)}\n")
        assert not callable(widths)
        out.write("\n".join(_line(row, widths) for row in rows) + "\n")
        out.flush()
        count += len(rows)
    return count


def tasks(rows: Rows) -> None:
    tasks_pages([rows])


def tasks_pages(pages: Iterable[Rows]) -> None:
    """Tasks, a page at a time (claudedo tasks streams them)."""
    count = _page_tables(
        pages,
        [("id", 8), ("status", 9), ("title", None), ("list", 16), ("created", 20),
         ("finished", 20)],
        lambda r: [
            _short(r["id"][:8], 8),
            _status(r),
            _short(r["title"], 50),
            _list_name(r, 16),
            _time(r["created_at"]),
            _time(r["finished_at"]),
        ],
    )  # fmt: skip
    _console.print(_plural(count, "task") if count else "no tasks")


def _status(task: dict[str, Any]) -> str:
    """The status, or `deleted` / `archived` for a task put away (its status is kept)."""
    if task.get("deleted_at"):
        return "deleted"
    return "archived" if task.get("archived_at") else str(task["status"])


def _list_name(task: dict[str, Any], width: int) -> str:
    return _short(task.get("list_name") or task["list_id"][:8], width)


def task_one(task: dict[str, Any] | list[dict[str, Any]]) -> None:
    if isinstance(task, list):
        tasks(task)
        return
    _console.print(_heading("task", task, "title"))
    put_away = f" ({_status(task)})" if _status(task) != task["status"] else ""
    _console.print(f"  status: {task['status']}{put_away}   list: {_list_name(task, 60)}")
    if task.get("description"):
        _console.print(f"  description: {_short(task['description'], 200)}")
    for key in (*AGENT_SETTINGS, "result", "error", "cause"):
        if task.get(key) is not None:
            _console.print(f"  {key}: {_short(task[key], 200)}")
    _console.print(
        f"  created: {_time(task['created_at'])}   started: "
        f"{_time(task['started_at'])}   finished: {_time(task['finished_at'])}"
    )
    for sub in task.get("subtasks") or []:
        mark = "x" if sub["done"] else " "
        _console.print(f"  {sub['position'] + 1}. [{mark}] {_short(sub['title'], 200)}")
    for run in task.get("runs") or []:
        _console.print(f"  run {_run_line(run)}")
    tree = task.get("worktree")
    if tree:
        where = f"{tree['kind']} {_short(tree['path'], 200)}"
        if tree.get("branch"):
            base = _short(tree.get("base_branch"), 100) or "detached HEAD"
            where += f" on {_short(tree['branch'], 100)} from {base}"
        _console.print(f"  {where} ({tree['status']}, {tree['commit_count']} commit(s))")


def _run_line(run: dict[str, Any]) -> str:
    kind = "retry" if run.get("is_retry") else "continue" if run.get("is_continue") else "run"
    if run.get("finished_at") is None:
        outcome = "running"
    else:
        outcome = "ok" if run.get("success") else f"failed ({_short(run.get('cause'), 40)})"
    cost = run.get("cost_usd")
    return (
        f"{run['run_number']} {kind}: {outcome}, turns {run.get('turn_count') or 0}, "
        f"cost ${cost or 0:.4f}, session {_short(run.get('session_id') or '-', 8)}"
    )


def runs(rows: Rows) -> None:
    runs_pages([rows])


def runs_pages(pages: Iterable[Rows]) -> None:
    def cells(run: dict[str, Any]) -> list[str]:
        kind = "retry" if run["is_retry"] else "continue" if run["is_continue"] else "run"
        if run["finished_at"] is None:
            outcome = "running"
        else:
            cause = _short(run["cause"], 40)
            outcome = "ok" if run["success"] else f"{cause}: {_short(run['error'], 40)}"
        return [
            str(run["run_number"]),
            kind,
            outcome,
            str(run["turn_count"] or ""),
            f"{run['tokens_in'] or 0}/{run['tokens_out'] or 0}",
            f"{run['cost_usd'] or 0:.4f}",
            _short((run["session_id"] or "")[:8], 8),
            _time(run["finished_at"]),
        ]

    columns: list[tuple[str, int | None]] = [
        ("run", 4), ("kind", 8), ("outcome", None), ("turns", 5), ("tokens in/out", 15),
        ("cost $", 10), ("session", 8), ("ended", 20),
    ]  # fmt: skip
    if not _page_tables(pages, columns, cells, flexible_max=60):
        _console.print("no runs yet")


def audit(rows: Rows) -> None:
    audit_pages([rows])


def audit_pages(pages: Iterable[Rows]) -> None:
    """A task's timeline: when, where, who, and what changed, then the task's totals."""
    from projections.timeline import Timeline

    timeline = Timeline()

    def cells(r: dict[str, Any]) -> list[str]:
        return [
            str(r["seq"]),
            _time(r["occurred_at"]),
            _short(r["node"], 12),
            _short(r["actor"], 22),
            _short(timeline.what(r), 110),
        ]

    columns: list[tuple[str, int | None]] = [
        ("seq", 8), ("time", 20), ("node", 12), ("actor", 22), ("what", None),
    ]  # fmt: skip
    if not _page_tables(pages, columns, cells, flexible_max=110):
        _console.print("no events")
        return
    _console.file.write(plain(timeline.totals.line()) + "\n")


def sql(result: dict[str, Any]) -> None:
    sql_pages([result])


def sql_pages(parts: Iterable[dict[str, Any]], max_rows: int | None = None) -> None:
    """Rows of a query, a page at a time: the columns are as wide as the first page needs
    (up to 60), and a longer value on a later page is cut to that width. Past `max_rows`,
    the rest is only counted, and a note says how many there were."""
    names: list[str] = []
    total = 0

    def pages() -> Iterator[list[Any]]:
        nonlocal total
        for part in parts:
            names[:] = [_short(c, 60) for c in part["columns"]]
            rows = part["rows"]
            left = len(rows) if max_rows is None else max(0, max_rows - total)
            total += len(rows)
            if left:
                yield rows[:left]

    def cells(row: list[Any]) -> list[str]:
        return ["NULL" if v is None else _short(v, 60) for v in row]

    def widths(rows: list[list[str]]) -> list[int]:
        return [
            max([4, cell_len(name), *(cell_len(row[i]) for row in rows)])
            for i, name in enumerate(names)
        ]

    out = _console.file
    count = _print_rows(pages(), names, widths, cells)
    if not count and names:
        header = _line(names, [max(4, cell_len(n)) for n in names])
        out.write(f"{header}\n{'─' * cell_len(header)}\n")
    if count < total:
        _say(f"(showing {count} of {total} rows; --max-rows or --json for all)")
    else:
        _console.print(_plural(count, "row"))


def rebuild(data: dict[str, Any]) -> None:
    _console.print(
        f"rebuilt the projection from {data['rebuilt_to_seq']} events in "
        f"{data['seconds']:.2f}s; checkpoint now {data['checkpoint_seq']}"
    )


def board_table(data: dict[str, Any]) -> Table:
    counts = data["counts"]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    table = Table(
        "node", "slot", "task", "status", "run", "cost $", "latest output",
        title=f"ClaudeDo board: {summary or 'no tasks'}",
    )  # fmt: skip
    for row in data["working"]:
        table.add_row(
            _short(row["node_id"], 40),
            "" if row["slot"] is None else str(row["slot"]),
            f"{row['id'][:8]} {_short(row['title'], 30)}",
            row["status"],
            str(row["run_number"] or ""),
            f"{row['cost_usd'] or 0:.4f}",
            _short(row["last_line"], 60),
        )
    return table


def board(data: dict[str, Any]) -> None:
    _console.print(board_table(data))


def board_away(why: str) -> Text:
    """What a live board shows while no node answers; it asks again at the next refresh."""
    return Text(f"{plain(why)}; trying again…")


# --- what an action did, in one line (gh and uv say it so); --json keeps the whole reply ---


def _task_ref(task: dict[str, Any]) -> str:
    return f'{task["id"][:8]} "{_short(task["title"], 60)}"'


def list_added(row: dict[str, Any]) -> None:
    where = f"on {_short(row['dir'], 200)}" if row.get("dir") else "(a sandbox list: no git dir)"
    _say(f"created list {_short(row['name'], 100)} ({row['id'][:8]}) {where}")


def list_changed(row: dict[str, Any]) -> None:
    _say(f"changed list {_short(row['name'], 100)} ({row['id'][:8]})")


def list_archived(row: dict[str, Any]) -> None:
    _say(f"archived list {_short(row['name'], 100)} ({row['id'][:8]}) and its tasks")


def list_unarchived(row: dict[str, Any]) -> None:
    _say(f"brought back list {_short(row['name'], 100)} ({row['id'][:8]}) and its tasks")


def list_deleted(row: dict[str, Any]) -> None:
    _say(f"deleted list {_short(row['name'], 100)} ({row['id'][:8]}); its events stay")


def task_added(task: dict[str, Any]) -> None:
    _say(f"added task {_task_ref(task)} to {_list_name(task, 100)} ({task['status']})")


def task_edited(task: dict[str, Any]) -> None:
    _say(f"edited task {_task_ref(task)}")


def _each(rows: list[dict[str, Any]], line: Callable[[dict[str, Any]], str]) -> None:
    for task in rows:
        _say(line(task))


def tasks_queue(rows: Rows) -> None:
    _each(rows, lambda t: f"queued {_task_ref(t)}")


def tasks_unqueue(rows: Rows) -> None:
    _each(rows, lambda t: f"unqueued {_task_ref(t)} (draft)")


def tasks_cancel(rows: Rows) -> None:
    _each(
        rows,
        lambda t: (
            f"cancel requested for {t['id'][:8]} (its slot stops the run)"
            if t["cancel_requested"]
            else f"cancelled {_task_ref(t)}"
        ),
    )


def tasks_archive(rows: Rows) -> None:
    _each(rows, lambda t: f"archived {_task_ref(t)}")


def tasks_unarchive(rows: Rows) -> None:
    _each(rows, lambda t: f"brought back {_task_ref(t)}")


def tasks_delete(rows: Rows) -> None:
    _each(rows, lambda t: f"deleted {_task_ref(t)}; its events, runs and git work stay")


def tasks_ended(rows: Rows) -> None:
    def line(t: dict[str, Any]) -> str:
        why = f": {_short(t.get('cause'), 40)}" if t["status"] == "failed" else ""
        return f"{_task_ref(t)} {t['status']}{why}"

    _each(rows, line)


def task_continued(task: dict[str, Any]) -> None:
    runs = task.get("runs") or []
    session = (runs[-1].get("session_id") or "")[:8] if runs else ""
    _say(
        f"queued {_task_ref(task)} to continue session {_short(session, 8)} as run {len(runs) + 1}"
    )


def subtasks_added(task: dict[str, Any]) -> None:
    subs = task.get("subtasks") or []
    _say(f"task {task['id'][:8]} has {_plural(len(subs), 'sub-task')} now")


def subtasks_marked(task: dict[str, Any], refs: Iterable[str], verb: str) -> None:
    said = "ticked" if verb == "done" else "unticked"
    _say(f"{said} sub-task {', '.join(_short(r, 40) for r in refs)} of task {_task_ref(task)}")


def merged(task: dict[str, Any]) -> None:
    tree = task.get("worktree") or {}
    branch, into = _short(tree.get("branch"), 100), _short(tree.get("base_branch"), 100)
    outcome = task.get("outcome", "merged")
    if outcome == "nothing_to_merge":
        _say(f"nothing to merge: {branch} has no commits beyond {into}")
    elif outcome == "already_merged":
        _say(f"already merged: {branch} is in {into} ({str(tree.get('merge_commit'))[:7]})")
    else:
        _say(f"merged {branch} into {into} ({str(tree.get('merge_commit'))[:7]})")


def discarded(task: dict[str, Any]) -> None:
    tree = task.get("worktree") or {}
    kept = _short(tree.get("kept_ref"), 100) or "nowhere: the branch was gone"
    _say(f"discarded {_short(tree.get('branch'), 100)} of task {task['id'][:8]}; its commits "
         f"are kept in {kept}")  # fmt: skip


def pruned(data: dict[str, Any]) -> None:
    rows = data["worktrees"]
    if not rows:
        _say("nothing to prune: every worktree holds unmerged work or a task under way")
        return
    for r in rows:
        what = f"{_short(r['branch'], 100)} of task {r['task_id'][:8]} ({r['why']})"
        _say(("removed " if data["applied"] else "would remove ") + what)
    if not data["applied"]:
        _say(f"{_plural(len(rows), 'worktree')} to remove: run again with --yes to remove them")


def _count(n: int | None) -> str:
    """A count in at most five characters: 9500, 12.3k, 4.56M."""
    if n is None:
        return "-"
    if n < 10_000:
        return str(n)
    for size, unit in ((1e3, "k"), (1e6, "M")):
        if n / size < 999.5:
            return f"{n / size:.3g}{unit}"
    return f"{n / 1e9:.3g}G"


def _ms(value: float | None) -> str:
    """A duration given in milliseconds, in the unit that reads best: 850ms, 12.3s, 4m05s."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:.0f}ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def stats(rows: Rows, by: str) -> None:
    """`claudedo stats`: a row per model, list or day; the JSON output keeps every column."""
    if not rows:
        _console.print("no runs yet")
        return
    table = Table()
    table.add_column(by)
    for name in ("runs", "ok %", "retries"):
        table.add_column(name, justify="right")
    table.add_column("failures")
    for name in ("tokens in/out", "cache read/new", "cost $", "$/done task", "run p50/p95",
                 "wait p50/p95"):  # fmt: skip
        table.add_column(name, justify="right")
    for r in rows:
        if by == "list":
            key = _short(r["list_name"] or r["list_id"], 30)
        else:
            key = _short(r[by], 30) or "(unknown)"
        rate = r["success_rate"]
        causes = sorted(r["failure_causes"].items(), key=lambda kv: (-kv[1], kv[0]))
        failures = ", ".join(f"{_short(cause, 20)} {n}" for cause, n in causes)
        table.add_row(
            key,
            str(r["runs"]),
            "-" if rate is None else f"{100 * rate:.0f}",
            str(r["retries"]),
            failures or "-",
            f"{_count(r['tokens_in'])}/{_count(r['tokens_out'])}",
            f"{_count(r['cache_read_tokens'])}/{_count(r['cache_creation_tokens'])}",
            _money(r["cost_usd"]),
            _money(r["cost_per_done_task_usd"]),
            f"{_ms(r['p50_duration_ms'])}/{_ms(r['p95_duration_ms'])}",
            f"{_ms(r['p50_queue_wait_ms'])}/{_ms(r['p95_queue_wait_ms'])}",
        )
    _console.print(table)


def export(data: dict[str, Any]) -> None:
    files = data["files"]
    _console.print(
        f"exported {_plural(len(files), 'table')} at checkpoint {data['checkpoint_seq']} "
        f"into {_short(data['dir'], 200)}"
    )
    table = Table("table", "rows", "file", box=None)
    for f in files:
        table.add_row(f["table"], str(f["rows"]), _short(f["path"], 200))
    _console.print(table)
