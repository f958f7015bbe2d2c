"""`claudedo audit verify`: the log's proof (events/audit.py) and what it points to outside
the log: every run's transcript (its NDJSON file, and its lines in the output stream while
they are kept) against the line count and SHA-256 in its RunFinished, and every recorded
commit still reachable from a ref of its repository.

The same checks run on a live node's log and on an export (audit/export.py), which is read
without a node or NATS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from claudedo_actors.agent.run_output import log_path
from claudedo_actors.git.runner import GitError, git
from events.audit import (
    DEFAULT_MAX_UNVOUCHED,
    Discrepancy,
    LogVerifier,
    RunRecord,
    VerifyResult,
)
from events.log import RawEvent
from projections.rebuild import apply_pipelined


@dataclass
class OutputSeen:
    """What the output stream still holds of one run."""

    lines: int = 0
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    first_line: int | None = None
    ended: bool = False


@dataclass
class Report:
    """What verify found: its discrepancies, and what it checked."""

    result: VerifyResult
    discrepancies: list[Discrepancy]
    transcripts_checked: int = 0
    outputs_checked: int = 0
    commits_checked: int = 0
    notes: list[str] = field(default_factory=list)
    max_unvouched: int = DEFAULT_MAX_UNVOUCHED

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def as_json(self) -> dict[str, object]:
        result = self.result
        return {
            "ok": self.ok,
            "discrepancies": [{"where": d.where, "what": d.what} for d in self.discrepancies],
            "messages": result.messages,
            "first_seq": result.first_seq,
            "last_seq": result.last_seq,
            "chained": result.chained,
            "unchained": result.unchained,
            "checkpoints": len(result.checkpoints),
            "vouched_upto": result.vouched_upto,
            "unvouched": result.unvouched,
            "log_hash": result.log_hash,
            "transcripts_checked": self.transcripts_checked,
            "outputs_checked": self.outputs_checked,
            "commits_checked": self.commits_checked,
            "notes": self.notes,
        }


def verify_log(
    batches: Iterable[list[RawEvent]],
    stream: str,
    trusted: dict[str, str],
    only: str | None = None,
    last_seq: int | None = None,
    max_unvouched: int | None = None,
) -> VerifyResult:
    verifier = LogVerifier(stream, trusted, only, max_unvouched=max_unvouched)
    # The next batch is read while this one is checked (hashing and decoding release the GIL
    # for part of their time, the socket reads and the server for more).
    apply_pipelined(batches, verifier.feed_batch)
    return verifier.finish(last_seq)


def _runs(result: VerifyResult, only: str | None) -> list[RunRecord]:
    runs = [r for r in result.runs.values() if only is None or r.task_id == only]
    return [r for r in runs if r.finished_seq is not None and r.transcript_sha256]


def check_transcripts(report: Report, transcripts_dir: Path, only: str | None = None) -> None:
    """Each finished run's NDJSON file (named as the node names it, never a path from the
    log) against its RunFinished."""
    for run in _runs(report.result, only):
        where = f"run {run.task_id} #{run.run_number}"
        path = log_path(transcripts_dir, run.task_id, run.run_number)
        try:
            lines, digest = _file_lines_and_sha(path)
        except FileNotFoundError:
            report.discrepancies.append(Discrepancy(where, f"transcript {path.name} is missing"))
            continue
        except OSError as exc:
            what = f"transcript {path.name} unreadable: {exc.strerror or exc}"
            report.discrepancies.append(Discrepancy(where, what))
            continue
        report.transcripts_checked += 1
        _compare(report, where, f"transcript {path.name}", run, lines, digest)


def _file_lines_and_sha(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            lines += chunk.count(b"\n")
    return lines, sha.hexdigest()


def _compare(
    report: Report, where: str, what: str, run: RunRecord, lines: int, digest: str
) -> None:
    if lines != run.line_count:
        text = f"{what} has {lines} lines, RunFinished says {run.line_count}"
        report.discrepancies.append(Discrepancy(where, text))
    elif digest != run.transcript_sha256:
        said = (run.transcript_sha256 or "")[:12]
        text = f"{what} hashes to {digest[:12]}…, RunFinished says {said}…"
        report.discrepancies.append(Discrepancy(where, text))


def check_outputs(
    report: Report, outputs: dict[tuple[str, int], OutputSeen], only: str | None = None
) -> None:
    """Each finished run whose lines the output stream still holds whole (its first line and
    its end marker) against its RunFinished; older ones aged out, which is no discrepancy."""
    aged = 0
    for run in _runs(report.result, only):
        seen = outputs.get((run.task_id, run.run_number))
        if seen is None or not seen.ended or (seen.lines and seen.first_line != 1):
            aged += 1
            continue
        report.outputs_checked += 1
        where = f"run {run.task_id} #{run.run_number}"
        _compare(report, where, "output stream", run, seen.lines, seen.sha.hexdigest())
    if aged:
        report.notes.append(f"{aged} run(s) no longer whole in the output stream (aged out)")


def check_commits(
    report: Report, reachable: Callable[[str], set[str] | None], only: str | None = None
) -> None:
    """Every commit the log recorded (runs' commits, merge commits, discarded heads) is
    reachable from a ref of its repository. `reachable(repo)` gives the commits reachable
    there (None: the repository is not here)."""
    cache: dict[str, set[str] | None] = {}
    missing_repos: set[str] = set()
    for record in report.result.commits:
        if only is not None and record.task_id != only:
            continue
        where = f"task {record.task_id}"
        if record.repo is None:
            report.notes.append(f"{where}: {record.what} {record.commit[:12]} has no repository")
            continue
        if record.repo not in cache:
            cache[record.repo] = reachable(record.repo)
        commits = cache[record.repo]
        if commits is None:
            missing_repos.add(record.repo)
            continue
        report.commits_checked += 1
        if record.commit not in commits:
            kept = f" (kept ref {record.kept_ref})" if record.kept_ref else ""
            what = f"{record.what} {record.commit[:12]}{kept} is not reachable in its repository"
            report.discrepancies.append(Discrepancy(where, what))
    for repo in sorted(missing_repos):
        report.discrepancies.append(Discrepancy("git", f"repository {repo} is not there"))


def reachable_commits(repo: Path) -> set[str] | None:
    """Every commit reachable from any ref of `repo` (None: not a git repository here)."""
    if not repo.is_dir():
        return None
    try:
        out = git(repo, "rev-list", "--all", timeout_s=600)
    except GitError:
        return None
    return set(out.split())
