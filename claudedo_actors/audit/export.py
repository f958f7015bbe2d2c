"""`claudedo audit export DIR`: everything an auditor needs to verify the log offline.

    DIR/MANIFEST.json          what the export holds, and the SHA-256 of log.jsonl
    DIR/log.jsonl              every stored message: {"seq", "subject", "data"} with the
                               stored bytes as text ("data_b64" for bytes that are not UTF-8)
    DIR/transcripts/           each run's NDJSON file (<task id>_run<N>.ndjson)
    DIR/keys/<key id>.pub      the public keys the exporting home trusts
    DIR/git/<n>.bundle         per repository, the refs holding the recorded commits
    DIR/git/repos.json         repository path -> bundle

`claudedo audit verify --export DIR` reads it with no node and no NATS (`ExportSource`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec

from claudedo_actors.agent.run_output import log_path
from claudedo_actors.git.runner import GitError, git
from claudedo_actors.node.home import read_public_keys
from events.audit import LogVerifier, VerifyResult
from events.errors import ClaudeDoError, Invalid
from events.log import RawEvent

FORMAT = "claudedo-audit-export"
VERSION = 1


class _Line(msgspec.Struct, omit_defaults=True):
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    subject: str
    data: str | None = None
    data_b64: str | None = None


_encode_line = msgspec.json.Encoder().encode
_decode_line = msgspec.json.Decoder(_Line).decode


@dataclass
class ExportSummary:
    messages: int
    transcripts: int
    keys: int
    bundles: int
    missing_transcripts: int

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def export(
    directory: Path,
    batches: Iterable[list[RawEvent]],
    stream: str,
    trusted: dict[str, str],
    transcripts_dir: Path,
    with_git: bool = True,
) -> ExportSummary:
    """Write an export into `directory`, which must not exist or be empty: nothing in it is
    ever overwritten."""
    try:
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise Invalid(f"{directory} is not an empty folder: an export never overwrites")
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".claudedo-export"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise Invalid(f"cannot write an export into {directory}: {exc.strerror or exc}") from None
    verifier = LogVerifier(stream, trusted)
    log_sha = hashlib.sha256()
    with (directory / "log.jsonl").open("wb") as out:
        for batch in batches:
            chunk = bytearray()
            verifier.feed_batch(batch)
            for raw in batch:
                chunk += _encode_line(_line(raw)) + b"\n"
            log_sha.update(chunk)
            out.write(chunk)
    result = verifier.finish()
    copied, missing = _copy_transcripts(result, transcripts_dir, directory / "transcripts")
    keys_dir = directory / "keys"
    keys_dir.mkdir()
    for kid, public in sorted(trusted.items()):
        (keys_dir / f"{kid}.pub").write_text(public + "\n")
    bundles = _bundle_repos(result, directory / "git") if with_git else 0
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "stream": stream,
        "exported_at": datetime.now(UTC).isoformat(),
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "messages": result.messages,
        "log_sha256": log_sha.hexdigest(),
        "log_hash": result.log_hash,
        "git": with_git,
    }
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportSummary(result.messages, copied, len(trusted), bundles, missing)


def _line(raw: RawEvent) -> _Line:
    try:
        return _Line(raw.seq, raw.subject, data=raw.data.decode())
    except UnicodeDecodeError:
        return _Line(raw.seq, raw.subject, data_b64=base64.b64encode(raw.data).decode())


def _copy_transcripts(result: VerifyResult, source: Path, target: Path) -> tuple[int, int]:
    target.mkdir()
    copied = missing = 0
    for run in result.runs.values():
        src = log_path(source, run.task_id, run.run_number)
        if src.is_file():
            shutil.copyfile(src, log_path(target, run.task_id, run.run_number))
            copied += 1
        elif run.transcript_sha256:
            missing += 1
    return copied, missing


def _bundle_repos(result: VerifyResult, target: Path) -> int:
    """A bundle per repository of the refs that hold the recorded commits (with their
    history, so the bundle stands alone)."""
    target.mkdir()
    by_repo: dict[str, set[str]] = {}
    for record in result.commits:
        if record.repo:
            by_repo.setdefault(record.repo, set()).add(record.commit)
    index: dict[str, str] = {}
    for n, (repo, commits) in enumerate(sorted(by_repo.items()), 1):
        path = Path(repo)
        if not path.is_dir():
            continue
        refs: set[str] = set()
        for commit in sorted(commits):
            try:
                out = git(path, "for-each-ref", "--format=%(refname)", "--contains", commit)
            except GitError:
                continue  # not in this repository: verify reports it
            refs.update(out.split())
        if not refs:
            continue
        name = f"{n}.bundle"
        git(path, "bundle", "create", str(target / name), *sorted(refs), timeout_s=600)
        index[repo] = name
    (target / "repos.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(index)


class ExportSource:
    """An export read back for `audit verify --export`, checked for its own integrity."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.manifest = json.loads((directory / "MANIFEST.json").read_text())
        except FileNotFoundError:
            raise ClaudeDoError(f"{directory} holds no MANIFEST.json: not an export") from None
        except (OSError, ValueError) as exc:
            raise ClaudeDoError(f"{directory}/MANIFEST.json is unreadable: {exc}") from None
        if not isinstance(self.manifest, dict) or (
            self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION
        ):
            raise ClaudeDoError(f"{directory} is not a ClaudeDo audit export of version {VERSION}")
        self.stream = str(self.manifest.get("stream", ""))
        self.transcripts_dir = directory / "transcripts"
        self.log_sha256 = hashlib.sha256()

    def batches(self, size: int = 10_000) -> Iterator[list[RawEvent]]:
        """The messages of log.jsonl in order; a line that is not one is an error."""
        self.log_sha256 = hashlib.sha256()
        try:
            f = (self.directory / "log.jsonl").open("rb")
        except FileNotFoundError:
            raise ClaudeDoError(f"{self.directory} holds no log.jsonl") from None
        with f:
            batch: list[RawEvent] = []
            for number, line in enumerate(f, 1):
                self.log_sha256.update(line)
                try:
                    item = _decode_line(line)
                    data = (
                        item.data.encode()
                        if item.data is not None
                        else base64.b64decode(item.data_b64 or "", validate=True)
                    )
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                    raise ClaudeDoError(f"log.jsonl line {number} is not a message") from None
                if not item.subject.isprintable() or not item.subject.isascii():
                    raise ClaudeDoError(f"log.jsonl line {number} has no NATS subject")
                batch.append(RawEvent(item.seq, item.subject, data))
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def log_intact(self) -> bool:
        """After `batches` was read whole: log.jsonl is the file the manifest describes."""
        return bool(self.log_sha256.hexdigest() == self.manifest.get("log_sha256"))

    def keys(self, folder: Path | None = None) -> dict[str, str]:
        return read_public_keys(folder or self.directory / "keys")

    def reachable(self, repo: str) -> set[str] | None:
        """Commits reachable from the refs of `repo`'s bundle (None: it has none)."""
        try:
            index = json.loads((self.directory / "git" / "repos.json").read_text())
        except (OSError, ValueError):
            return None
        name = index.get(repo) if isinstance(index, dict) else None
        if not isinstance(name, str) or "/" in name or not name.endswith(".bundle"):
            return None
        bundle = self.directory / "git" / name
        if not bundle.is_file():
            return set()
        with tempfile.TemporaryDirectory(prefix="claudedo-bundle-") as tmp:
            git(tmp, "init", "-q", "--bare")
            try:
                git(tmp, "fetch", "-q", str(bundle), "+refs/*:refs/*", timeout_s=600)
            except GitError:
                return set()
            out = git(tmp, "rev-list", "--all", timeout_s=600)
        return set(out.split())
