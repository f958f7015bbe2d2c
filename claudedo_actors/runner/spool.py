"""Appends that could not reach the log, kept on disk until they do.

When an append of a claimed task fails for a reason that may pass (NATS away, a timeout), the
task writer keeps its envelopes here (fsynced) before it tries again, and drops them once they
are stored. A node killed meanwhile finds them at its next start and appends them before it
settles anything: same event ids and the same expected sequence, so an append that was in fact
stored is recognised, not doubled. A spooled append the log can no longer take (the task was
settled by another node meanwhile) is moved to `rejected/`, never deleted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

import events as ev
from claudedo_actors.runner.ports import TaskLog

log = logging.getLogger("claudedo.spool")


class _Record(msgspec.Struct, frozen=True):
    task_id: str
    expected_seq: int
    envelopes: list[msgspec.Raw]


@dataclass(frozen=True)
class SpooledAppend:
    path: Path
    task_id: str
    expected_seq: int
    envelopes: list[ev.Envelope]


class Spool:
    """One file per append waiting for the log, named so that they sort in time order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, task_id: str, expected_seq: int, envelopes: list[ev.Envelope]) -> Path:
        """Write the append durably (temp file, fsync, rename); returns its file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = _Record(task_id, expected_seq, [msgspec.Raw(ev.encode(e)) for e in envelopes])
        path = self.folder / f"{envelopes[0].event_id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(record))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        return path

    def drop(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self) -> list[SpooledAppend]:
        """The appends still waiting, oldest first; an unreadable file is set aside."""
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                record = msgspec.json.decode(path.read_bytes(), type=_Record)
                envs = [ev.decode(bytes(raw)) for raw in record.envelopes]
            except (OSError, msgspec.DecodeError, msgspec.ValidationError, ev.DecodeError) as exc:
                self.reject(path, f"unreadable: {exc}")
                continue
            out.append(SpooledAppend(path, record.task_id, record.expected_seq, envs))
        return out

    def reject(self, path: Path, why: str) -> None:
        rejected = self.folder / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        os.replace(path, rejected / path.name)
        log.error("spooled append %s set aside in %s: %s", path.name, rejected, why)


def replay(spool: Spool, facade: TaskLog) -> tuple[int, int]:
    """Append what an earlier life of the node spooled; returns (appended, set aside).

    Raises what the log raises when it cannot be reached: the files stay for the next start.
    """
    appended = rejected = 0
    for item in spool.pending():
        try:
            facade.append(item.envelopes, item.expected_seq)
        except ev.ConcurrencyError:
            spool.reject(item.path, f"task {item.task_id[:8]} moved on meanwhile")
            rejected += 1
            continue
        spool.drop(item.path)
        appended += 1
    if appended:
        log.warning("appended %d spooled append(s) of an earlier life", appended)
    return appended, rejected


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
