"""`claudedo audit ID`: a task's events as a readable timeline, one line of what changed per
event (runs with their cost and outcome, commits, review decisions), and totals at the end.

Pure: fed the audit's rows (`seq`, `occurred_at`, `type`, `node`, `actor`, `payload`) in
order, page by page; it remembers what later lines need (sub-task titles, a run's kind).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


def _quote(text: Any, width: int = 60) -> str:
    value = " ".join(str(text).split())
    return f'"{value if len(value) <= width else value[: width - 1] + "…"}"'


def _short_commit(commit: Any) -> str:
    return str(commit or "")[:10]


def _money(value: Any) -> str:
    return f"${float(value):.4f}" if value is not None else "$?"


def _seconds(ms: Any) -> str:
    if ms is None:
        return ""
    s = int(ms) / 1000
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


_SETTINGS = ("model", "system_prompt", "agent_path", "permission_mode", "allowed_tools",
             "max_budget_usd", "max_turns", "timeout_s")  # fmt: skip


@dataclass
class Totals:
    runs: int = 0
    succeeded: int = 0
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    commits: int = 0
    outcome: str = ""
    review: str = ""

    def line(self) -> str:
        parts = [
            f"{self.runs} run{'' if self.runs == 1 else 's'} ({self.succeeded} succeeded)",
            f"{_money(self.cost_usd)}",
            f"{self.tokens_in}/{self.tokens_out} tokens in/out",
            f"{self.commits} commit{'' if self.commits == 1 else 's'}",
        ]
        if self.outcome:
            parts.append(self.outcome)
        if self.review:
            parts.append(self.review)
        return ", ".join(parts)


@dataclass
class Timeline:
    """What each event changed, in words (`what`), and the task's totals so far."""

    subtasks: dict[str, str] = field(default_factory=dict)
    run_kinds: dict[int, str] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)

    def what(self, row: Row) -> str:
        describe = _DESCRIBE.get(row["type"])
        p = row["payload"]
        if describe is None:
            return ", ".join(f"{k}={v}" for k, v in p.items())
        return describe(self, p)

    # --- the task --------------------------------------------------------------------------

    def _created(self, p: Row) -> str:
        subs = p.get("subtasks") or []
        for s in subs:
            self.subtasks[s["subtask_id"]] = s["title"]
        settings = [k for k in _SETTINGS if p.get(k) is not None]
        text = f"created {_quote(p['title'])}"
        if subs:
            text += f" with {len(subs)} sub-task{'' if len(subs) == 1 else 's'}"
        if settings:
            text += f"; settings: {', '.join(f'{k}={p[k]}' for k in settings)}"
        return text

    def _edited(self, p: Row) -> str:
        parts = []
        if "title" in p:
            parts.append(f"title {_quote(p['title'])}")
        if "description" in p:
            parts.append("description")
        for k in _SETTINGS:
            if k in p:
                parts.append(f"{k}={p[k]}" if p[k] is not None else f"{k} cleared")
        return "edited " + (", ".join(parts) or "nothing")

    def _queued(self, p: Row) -> str:
        follow_up = p.get("follow_up_prompt")
        return f"queued to continue: {_quote(follow_up)}" if follow_up else "queued"

    def _completed(self, p: Row) -> str:
        self.totals.outcome = "done"
        result = p.get("result")
        return f"done: {_quote(result)}" if result else "done"

    def _failed(self, p: Row) -> str:
        self.totals.outcome = f"failed ({p['cause']})"
        return f"failed ({p['cause']}): {_quote(p['error'])}"

    def _cancelled(self, p: Row) -> str:
        self.totals.outcome = "cancelled"
        return f"cancelled: {p.get('reason', '')}"

    # --- work and review -------------------------------------------------------------------

    def _worktree(self, p: Row) -> str:
        base = p.get("base_branch") or "a detached head"
        return f"worktree on branch {p['branch']} from {base} at {_short_commit(p['base_commit'])}"

    def _committed(self, p: Row) -> str:
        self.totals.commits += 1
        return (
            f"run {p['run_number']} committed {_short_commit(p['commit'])}: "
            f"{p['files_changed']} file(s), +{p['insertions']} -{p['deletions']}"
        )

    def _merged(self, p: Row) -> str:
        self.totals.review = f"merged into {p['into_branch']}"
        return f"merged into {p['into_branch']} as {_short_commit(p['merge_commit'])}"

    def _discarded(self, p: Row) -> str:
        self.totals.review = "discarded"
        if p.get("kept_ref"):
            head = _short_commit(p.get("head_commit"))
            return f"discarded; the work ({head}) is kept at {p['kept_ref']}"
        return "discarded; there was no work to keep"

    def _review_ended(self, p: Row) -> str:
        return f"{p['action']} did not happen: {_quote(p['error'])}"

    # --- runs ------------------------------------------------------------------------------

    def _run_started(self, p: Row) -> str:
        kind = "retry" if p.get("is_retry") else "continue" if p.get("is_continue") else "run"
        self.run_kinds[p["run_number"]] = kind
        text = f"run {p['run_number']} started"
        if kind != "run":
            resumed = p.get("resume_session_id")
            text += f" ({kind}, resuming session {resumed[:8]})" if resumed else f" ({kind})"
        if p.get("model"):
            text += f" with {p['model']}"
        return text + f" on slot {p['slot']}"

    def _run_finished(self, p: Row) -> str:
        t = self.totals
        t.runs += 1
        t.succeeded += bool(p["success"])
        t.cost_usd += float(p.get("cost_usd") or 0)
        t.tokens_in += int(p.get("tokens_in") or 0)
        t.tokens_out += int(p.get("tokens_out") or 0)
        outcome = "succeeded" if p["success"] else f"failed ({p.get('cause') or 'error'})"
        facts = [
            f"{p['turn_count']} turns" if p.get("turn_count") is not None else "",
            f"{p.get('tokens_in') or 0}/{p.get('tokens_out') or 0} tokens",
            _money(p.get("cost_usd")) if p.get("cost_usd") is not None else "",
            _seconds(p.get("duration_ms")),
        ]
        text = f"run {p['run_number']} {outcome}: " + ", ".join(f for f in facts if f)
        said = p.get("error") if not p["success"] else None
        return text + (f": {_quote(said)}" if said else "")


def _subtask(verb: str) -> Callable[[Timeline, Row], str]:
    def describe(self: Timeline, p: Row) -> str:
        if "title" in p:
            self.subtasks[p["subtask_id"]] = p["title"]
        title = self.subtasks.get(p["subtask_id"], p["subtask_id"])
        return f"sub-task {_quote(title, 40)} {verb}"

    return describe


_DESCRIBE: dict[str, Callable[[Timeline, Row], str]] = {
    "TaskCreated": Timeline._created,
    "TaskEdited": Timeline._edited,
    "SubtaskAdded": _subtask("added"),
    "SubtaskCompleted": _subtask("ticked"),
    "SubtaskReopened": _subtask("reopened"),
    "TaskQueued": Timeline._queued,
    "TaskUnqueued": lambda self, p: "unqueued",
    "TaskClaimed": lambda self, p: f"claimed by node {p['node_id'][:12]}, slot {p['slot']}",
    "TaskStarted": lambda self, p: "started",
    "TaskRequeued": lambda self, p: f"requeued: {p['reason']}",
    "TaskCompleted": Timeline._completed,
    "TaskFailed": Timeline._failed,
    "TaskCancelRequested": lambda self, p: f"cancel requested: {p.get('reason', '')}",
    "TaskCancelled": Timeline._cancelled,
    "TaskArchived": lambda self, p: "archived",
    "TaskUnarchived": lambda self, p: "unarchived",
    "TaskDeleted": lambda self, p: (
        f"deleted, overriding: {p['overrode']}" if p.get("forced") else "deleted"
    ),
    "WorktreeCreated": Timeline._worktree,
    "SandboxCreated": lambda self, p: "sandbox folder made",
    "WorktreeCommitted": Timeline._committed,
    "WorktreeMerged": Timeline._merged,
    "WorktreeDiscarded": Timeline._discarded,
    "ReviewStarted": lambda self, p: f"{p['action']} started",
    "ReviewEnded": Timeline._review_ended,
    "RunStarted": Timeline._run_started,
    "RunProcessSpawned": lambda self, p: f"run {p['run_number']}: agent process {p['pid']}",
    "RunSessionOpened": lambda self, p: (
        f"run {p['run_number']}: session {p['session_id'][:8]}"
        + (f", Claude Code {p['cli_version']}" if p.get("cli_version") else "")
    ),
    "SessionLost": lambda self, p: (
        f"run {p['run_number']}: session {p['session_id'][:8]} lost ({p['reason']})"
    ),
    "RunFinished": Timeline._run_finished,
}
