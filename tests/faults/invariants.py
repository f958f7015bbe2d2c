"""The fault suite's invariants, checked from outside on what a scenario left behind: the log
(read back from NATS), the node's projection file, the git repository and the machine's
processes. Each violation is one readable line; a scenario passes with none."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psutil

import events as ev
from claudedo_actors.agent.process import NODE_MARK
from events.log import STREAM
from events.replay import replay_batches
from projections import Projection, TaskState
from projections.rebuild import rebuild_file
from tests.conftest import wait_until

TABLES = ("lists", "tasks", "subtasks", "runs", "worktrees", "events", "skipped_messages")
UNSETTLED = ("claimed", "running")


@dataclass
class Report:
    """What a scenario did and what it broke."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"[{self.name}] {counts}, violations {len(self.violations)}"


def last_seq(url: str) -> int:
    async def ask() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(STREAM)
            return int(info.state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(ask())


def read_log(url: str) -> list[tuple[int, ev.Envelope]]:
    """Every event of the log, decoded, with its stream sequence. A cluster whose server just
    came back may answer "no responders" while its stream elects a leader: asked again."""

    def read() -> list[tuple[int, ev.Envelope]] | None:
        try:
            batches = list(replay_batches(url, STREAM, 1, last_seq(url)))
        except Exception:
            return None
        return [(raw.seq, ev.decode(raw.data)) for batch in batches for raw in batch]

    found: list[tuple[int, ev.Envelope]] = wait_until(read, 60, "the log to be readable")
    return found


def check(
    report: Report,
    url: str,
    projection_file: Path | list[Path],
    repos: list[Path],
    node_ids: list[str],
    acked_titles: set[str] | None = None,
    workdir_root: Path | None = None,
) -> Report:
    """Check every invariant; the nodes must be stopped (their projection files closed)."""
    log = read_log(url)
    report.counts["events"] = len(log)
    _exactly_once(report, log, acked_titles)
    files = projection_file if isinstance(projection_file, list) else [projection_file]
    for extra in files[1:]:
        _projection_equals_a_rebuild(report, url, extra, log).close()
    rebuilt = _projection_equals_a_rebuild(report, url, files[0], log)
    tasks = [t for t in (rebuilt.task_state(i) for i in _task_ids(log)) if t is not None]
    report.counts["tasks"] = len(tasks)
    report.counts["runs"] = sum(len(t.runs) for t in tasks)
    for task in tasks:
        if task.status in UNSETTLED:
            report.violations.append(f"task {task.id[:8]} left {task.status} with no live owner")
        _runs_keep_the_rules(report, task, [e for _, e in log if e.aggregate_id == task.id])
        _worktree_matches_its_events(report, task)
    _commits_reachable(report, log, repos)
    _no_process_left(report, node_ids, workdir_root)
    rebuilt.close()
    return report


def _task_ids(log: list[tuple[int, ev.Envelope]]) -> list[str]:
    return sorted({e.aggregate_id for _, e in log if e.aggregate == "task"})


def _exactly_once(
    report: Report, log: list[tuple[int, ev.Envelope]], acked: set[str] | None
) -> None:
    ids = Counter(e.event_id for _, e in log)
    for event_id, n in ids.items():
        if n > 1:
            report.violations.append(f"event {event_id} is in the log {n} times")
    if acked is None:
        return
    created = Counter(e.event.title for _, e in log if isinstance(e.event, ev.TaskCreated))
    for title in sorted(acked):
        if created[title] != 1:
            report.violations.append(f"acknowledged task {title!r} created {created[title]} times")


def _projection_equals_a_rebuild(
    report: Report, url: str, projection_file: Path, log: list[tuple[int, ev.Envelope]]
) -> Projection:
    fresh_path = projection_file.with_name("invariants-rebuilt.duckdb")
    rebuild_file(fresh_path, replay_batches(url, STREAM, 1, last_seq(url)))
    fresh = Projection(fresh_path)
    live = Projection(projection_file)
    try:
        if live.checkpoint < fresh.checkpoint:  # what the node's next start would apply
            for batch in replay_batches(url, STREAM, live.checkpoint + 1, fresh.checkpoint):
                live.apply(batch)
        for table in TABLES:
            if _rows(live, table) != _rows(fresh, table):
                report.violations.append(f"projection table {table} differs from a rebuild")
    finally:
        live.close()
    return fresh


def _rows(p: Projection, table: str) -> list[tuple[Any, ...]]:
    columns = "* EXCLUDE (recorded_at)" if table == "skipped_messages" else "*"
    return p.con.execute(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()


def _runs_keep_the_rules(report: Report, task: TaskState, events: list[ev.Envelope]) -> None:
    runs = sorted(task.runs, key=lambda r: r.run_number)
    for prev, nxt in itertools.pairwise(runs):
        if prev.finished_at is None or prev.finished_at > nxt.started_at:
            report.violations.append(
                f"task {task.id[:8]}: run {nxt.run_number} overlaps run {prev.run_number}"
            )
    # Per attempt (what follows a TaskQueued): at most one automatic retry, none in a
    # continue, at most two runs that did work (a run lost before its session opened did none).
    by_number = {r.run_number: r for r in runs}
    attempt: list[int] = []
    is_continue = False

    def close() -> None:
        worked = [by_number[n] for n in attempt if n in by_number]
        worked = [r for r in worked if not (r.session_id is None and r.cause == "worker_lost")]
        retries = sum(r.is_retry for r in worked)
        if retries > (0 if is_continue else 1) or len(worked) > 2:
            report.violations.append(
                f"task {task.id[:8]}: attempt with runs {attempt} breaks retry once"
            )

    for env in events:
        if isinstance(env.event, ev.TaskQueued):
            close()
            attempt, is_continue = [], env.event.follow_up_prompt is not None
        elif isinstance(env.event, ev.RunStarted):
            attempt.append(env.event.run_number)
    close()


def _worktree_matches_its_events(report: Report, task: TaskState) -> None:
    tree = task.worktree
    if tree is None or tree.kind != "worktree" or task.status in UNSETTLED:
        return
    path = Path(tree.path)
    if tree.status == "active" and not path.is_dir():
        report.violations.append(f"task {task.id[:8]}: active worktree {path} is not on disk")
    if tree.status == "discarded" and path.exists():
        report.violations.append(f"task {task.id[:8]}: discarded worktree still on disk")


def _commits_reachable(
    report: Report, log: list[tuple[int, ev.Envelope]], repos: list[Path]
) -> None:
    reachable: set[str] = set()
    for repo in repos:
        reachable.update(_git(repo, "rev-list", "--all").split())
    recorded: set[str] = set()
    for _, env in log:
        e = env.event
        if isinstance(e, ev.WorktreeCommitted):
            recorded.add(e.commit)
        elif isinstance(e, ev.WorktreeDiscarded) and e.head_commit:
            recorded.add(e.head_commit)
        elif isinstance(e, ev.WorktreeMerged):
            recorded.add(e.merge_commit)
    report.counts["commits"] = len(recorded)
    for _, env in log:  # every discard's own ref still points at what it kept
        e = env.event
        if not (isinstance(e, ev.WorktreeDiscarded) and e.kept_ref and e.head_commit):
            continue
        kept = {_git(r, "rev-parse", "--verify", "--quiet", e.kept_ref) for r in repos}
        if e.head_commit not in kept:
            report.violations.append(f"{e.kept_ref} no longer points at {e.head_commit[:10]}")
    for commit in sorted(recorded - reachable):
        report.violations.append(f"recorded commit {commit[:10]} is no longer reachable")


def _no_process_left(report: Report, node_ids: list[str], workdir_root: Path | None) -> None:
    marks = [f"{NODE_MARK}={n}".encode() for n in node_ids]
    for proc in psutil.process_iter(["name", "cwd"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if any(m in env for m in marks):
                report.violations.append(f"process {proc.pid} of a run is still alive")
            elif (
                workdir_root is not None
                and proc.info["name"] == "git"
                and str(proc.info["cwd"] or "").startswith(str(workdir_root))
            ):
                report.violations.append(f"git process {proc.pid} is still alive")
        except (psutil.Error, OSError):
            continue


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    ).stdout.strip()
