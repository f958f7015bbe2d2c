"""What `claudedo audit verify` and `claudedo audit export` do, for the CLI."""

from __future__ import annotations

from pathlib import Path

from claudedo_actors.audit.export import ExportSource, ExportSummary, export
from claudedo_actors.audit.verify import (
    Report,
    check_commits,
    check_outputs,
    check_transcripts,
    reachable_commits,
    verify_log,
)
from claudedo_actors.node.home import Home, read_public_keys
from events.audit import DEFAULT_MAX_UNVOUCHED, Discrepancy
from events.credentials import Credential
from events.errors import Ambiguous, Invalid, NotFound
from events.log import STREAM
from events.subjects import parse_event_subject


def _trusted(default: dict[str, str], keys_dir: Path | None) -> dict[str, str]:
    """The keys in `keys_dir` if given, else `default`."""
    if keys_dir is None:
        return default
    if not keys_dir.is_dir():
        raise Invalid(f"--keys {keys_dir} is not a folder")
    keys = read_public_keys(keys_dir)
    if not keys:
        raise Invalid(f"--keys {keys_dir} holds no public key (*.pub)")
    return keys


def _unvouched_note(report: Report) -> None:
    r = report.result
    if r.unvouched and r.unvouched <= report.max_unvouched:
        report.notes.append(
            f"{r.unvouched} event(s) after seq {r.vouched_upto} are not covered by a checkpoint "
            "yet (a node checkpoints every 1,000 events, or a minute after fewer)"
        )


def verify_live(
    home: Home,
    url: str,
    credential: Credential | None,
    only: str | None,
    keys_dir: Path | None,
    read_output: bool,
    max_unvouched: int | None = None,
) -> Report:
    """Verify the log of the node running on `home`, read as `credential`'s user."""
    from claudedo_actors.audit.live import last_seq, log_batches, read_outputs

    until = last_seq(url, STREAM, credential)
    trusted = _trusted(home.trusted_keys(), keys_dir)
    batches = log_batches(url, STREAM, until, credential)
    result = verify_log(batches, STREAM, trusted, only, until, max_unvouched)
    report = Report(result, list(result.discrepancies), max_unvouched=_limit(max_unvouched))
    _unvouched_note(report)
    check_transcripts(report, home.logs_dir, only)
    if read_output:
        check_outputs(report, read_outputs(url, credential), only)
    check_commits(report, lambda repo: reachable_commits(Path(repo)), only)
    return report


def _limit(max_unvouched: int | None) -> int:
    return DEFAULT_MAX_UNVOUCHED if max_unvouched is None else max_unvouched


def verify_export(
    directory: Path,
    ref: str | None,
    keys_dir: Path | None,
    trust_export_keys: bool = False,
    max_unvouched: int | None = None,
) -> Report:
    """Verify an export with no node and no NATS. Its checkpoints are checked against the
    keys in `keys_dir`, which the auditor got elsewhere: keys shipped inside the export prove
    nothing (whoever forged it would sign with a key of their own and ship that), and are
    used only when `trust_export_keys` says so, with a note."""
    source = ExportSource(directory)
    if keys_dir is None and not trust_export_keys:
        raise Invalid(
            "give --keys DIR with the public keys you trust (a node's are in its home, "
            "keys/trusted/), or --trust-export-keys to check against the export's own keys"
        )
    only = _resolve_in_export(source, ref)
    trusted = source.keys() if keys_dir is None else _trusted({}, keys_dir)
    result = verify_log(source.batches(), source.stream, trusted, only, None, max_unvouched)
    report = Report(result, list(result.discrepancies), max_unvouched=_limit(max_unvouched))
    if keys_dir is None:
        report.notes.append(
            "checkpoints were checked against the keys the export carries: this shows the "
            "export is consistent, not who wrote it (give --keys to know)"
        )
    _unvouched_note(report)
    if not source.log_intact():
        what = "log.jsonl is not the file the manifest describes (its SHA-256 differs)"
        report.discrepancies.insert(0, Discrepancy("export", what))
    said = source.manifest.get("last_seq")
    if result.last_seq != said:
        what = f"log.jsonl ends at seq {result.last_seq}, the manifest says {said}"
        report.discrepancies.insert(0, Discrepancy("export", what))
    check_transcripts(report, source.transcripts_dir, only)
    if source.manifest.get("git"):
        check_commits(report, source.reachable, only)
    elif result.commits:
        unchecked = len(result.commits)
        report.notes.append(f"{unchecked} recorded commit(s) not checked: no git bundles")
    return report


def _resolve_in_export(source: ExportSource, ref: str | None) -> str | None:
    if ref is None:
        return None
    ids: set[str] = set()
    for batch in source.batches():
        for raw in batch:
            parsed = parse_event_subject(raw.subject)
            if parsed is not None and parsed[1].startswith(ref):
                ids.add(parsed[1])
    if not ids:
        raise NotFound(f"no aggregate in the export has an id starting with {ref!r}")
    if len(ids) > 1:
        shown = ", ".join(sorted(ids)[:5])
        raise Ambiguous(f"{ref!r} starts {len(ids)} ids in the export: {shown}")
    return ids.pop()


def export_live(
    home: Home, url: str, credential: Credential | None, directory: Path, with_git: bool
) -> ExportSummary:
    from claudedo_actors.audit.live import last_seq, log_batches

    until = last_seq(url, STREAM, credential)
    batches = log_batches(url, STREAM, until, credential)
    return export(directory, batches, STREAM, home.trusted_keys(), home.logs_dir, with_git)


def summary(report: Report) -> str:
    r = report.result
    parts = [
        f"{r.messages} messages (seq {r.first_seq}..{r.last_seq})" if r.messages else "0 messages",
        f"{r.chained} chained" + (f", {r.unchained} before chains" if r.unchained else ""),
        f"{len(r.checkpoints)} checkpoints"
        + (f" up to seq {r.vouched_upto}" if r.checkpoints else ""),
        f"{report.transcripts_checked} transcripts",
        f"{report.outputs_checked} output streams",
        f"{report.commits_checked} commits",
    ]
    n = len(report.discrepancies)
    verdict = "verified" if n == 0 else f"{n} discrepanc{'y' if n == 1 else 'ies'}"
    return f"{verdict}: " + ", ".join(parts)
