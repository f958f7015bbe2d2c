"""Human output of the CLI: readable tables (rich), every user text shown literally.

Markup and emoji codes are off, so a title like `[red]x[/red]` or `:smile:` prints as typed;
control characters (an escape sequence in an agent's output) are shown escaped, never sent to
the terminal.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from claudedo_actors.cli.literal import plain
from events import AGENT_SETTINGS

# Piped output keeps a wide table rather than rich's 80-column default.
_console = Console(
    highlight=False,
    markup=False,
    emoji=False,
    soft_wrap=False,
    width=None if sys.stdout.isatty() else 160,
)


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
        table.add_row(
            r["id"][:8],
            _short(r["name"], 200),
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


def tasks(rows: list[dict[str, Any]]) -> None:
    if not rows:
        _console.print("no tasks")
        return
    table = Table("id", "status", "title", "list", "created", "finished")
    for r in rows:
        table.add_row(
            r["id"][:8],
            r["status"],
            _short(r["title"], 50),
            _short(r["list_id"], 8),
            _time(r["created_at"]),
            _time(r["finished_at"]),
        )
    _console.print(table)
    _console.print(f"{len(rows)} task{'s' if len(rows) != 1 else ''}")


def task_one(task: dict[str, Any] | list[dict[str, Any]]) -> None:
    if isinstance(task, list):
        tasks(task)
        return
    _console.print(_heading("task", task, "title"))
    _console.print(f"  status: {task['status']}   list: {_short(task['list_id'], 8)}")
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


def runs(rows: list[dict[str, Any]]) -> None:
    table = Table("run", "kind", "outcome", "turns", "tokens in/out", "cost $", "session", "ended")
    for run in rows:
        kind = "retry" if run["is_retry"] else "continue" if run["is_continue"] else "run"
        if run["finished_at"] is None:
            outcome = "running"
        else:
            cause = _short(run["cause"], 40)
            outcome = "ok" if run["success"] else f"{cause}: {_short(run['error'], 40)}"
        table.add_row(
            str(run["run_number"]),
            kind,
            outcome,
            str(run["turn_count"] or ""),
            f"{run['tokens_in'] or 0}/{run['tokens_out'] or 0}",
            f"{run['cost_usd'] or 0:.4f}",
            _short(run["session_id"], 8),
            _time(run["finished_at"]),
        )
    _console.print(table)


def audit(rows: list[dict[str, Any]]) -> None:
    table = Table("seq", "time", "type", "node", "actor", "fields")
    table.columns[2].no_wrap = True
    for r in rows:
        fields = ", ".join(
            f"{k}={_short(json.dumps(v) if not isinstance(v, str) else v, 40)}"
            for k, v in r["payload"].items()
        )
        table.add_row(
            str(r["seq"]),
            _time(r["occurred_at"]),
            r["type"],
            _short(r["node"], 40),
            _short(r["actor"], 40),
            _short(fields, 80),
        )
    _console.print(table)


def sql(result: dict[str, Any]) -> None:
    table = Table(*(_short(c, 60) for c in result["columns"]))
    for row in result["rows"]:
        table.add_row(*("NULL" if v is None else _short(v, 60) for v in row))
    _console.print(table)
    n = len(result["rows"])
    _console.print(f"{n} row{'s' if n != 1 else ''}")


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
