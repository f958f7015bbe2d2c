"""The node's checkpointer: it follows the log's running hash and now and then appends a
signed `LogCheckpointed` (events/audit.py), so an auditor can tell the log it reads is the
one this node saw.

It runs on a thread of its own, woken when the projection advances. It reads what is new with
the bulk reader, folds it into the log hash, and appends a checkpoint once `every` events
other than checkpoints came since the last one, or `interval_s` after the first of fewer. It
never checkpoints only checkpoints, so idle nodes (even several, checkpointing each other's)
append nothing. Its place in the log is kept in the home (`checkpoint.json`); a lost or
unreadable file makes it read the log from the start again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import events as ev
from events.audit import ZERO_HASH, SigningKey, checkpoint_message, next_log_hash
from events.checkpoints import LogCheckpointed
from events.credentials import write_private
from events.log import RawEvent

log = logging.getLogger("claudedo.checkpointer")

ReadLog = Callable[[int, int], Iterator[list[RawEvent]]]
Append = Callable[[list[ev.Envelope], int | None], list[int]]

_CHECKPOINT_SUFFIX = ".LogCheckpointed"


def env_number(name: str, default: float) -> float:
    """A positive number from the environment; `default` when unset, unreadable or not
    positive."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class Checkpointer:
    """Folds the log into its hash and appends signed checkpoints (see the module's text)."""

    def __init__(
        self,
        node_id: str,
        stream: str,
        key: SigningKey,
        read_log: ReadLog,
        append: Append,
        state_file: Path,
        every: int | None = None,
        interval_s: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.stream = stream
        self.key = key
        self._read_log = read_log
        self._append = append
        self._state_file = state_file
        self.every = max(1, every or int(env_number("CLAUDEDO_CHECKPOINT_EVERY", 1_000)))
        self.interval_s = interval_s or env_number("CLAUDEDO_CHECKPOINT_INTERVAL_S", 60.0)
        self._origin = ev.Origin(node_id=node_id, correlation_id="", actor="node:checkpointer")
        self.seq, self.log_hash, self.pending, self._pending_since = self._load()
        self.checkpoints = 0
        self._known_last = 0
        self._behind_since = 0.0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def advanced(self, last_seq: int) -> None:
        """The log holds at least `last_seq` messages (the projection reached it). The log is
        read only when a checkpoint may be due: `every` messages came, or `interval_s` passed
        since the first of fewer (not on every event: a node running tasks would read the
        log again for each of its events)."""
        if last_seq <= self._known_last:
            return
        was_behind = self._known_last > self.seq
        self._known_last = last_seq
        if not was_behind:
            self._behind_since = time.monotonic()
            self._wake.set()  # to wait for the interval from now
        elif last_seq - self.seq >= self.every:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping:
            starts = [self._pending_since] if self.pending else []
            if self._known_last > self.seq:
                starts.append(self._behind_since)
            due = min(starts) + self.interval_s if starts else None
            timeout = None if due is None else max(0.0, due - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.step()
            except Exception as exc:  # NATS away, a read cut short: the next wake tries again
                log.warning("checkpoint deferred: %s", exc)
                with contextlib.suppress(Exception):
                    self._stopped.wait(min(self.interval_s, 5.0))  # not woken by new events

    def step(self, now: float | None = None) -> bool:
        """Read what is new if a checkpoint may be due; append one if it is. True when one
        was appended."""
        now = time.monotonic() if now is None else now
        behind = self._known_last - self.seq
        if behind > 0:
            since = min(self._behind_since, self._pending_since) if self.pending else None
            since = self._behind_since if since is None else since
            if self.pending + behind >= self.every or now - since >= self.interval_s:
                self._fold(self.seq + 1, self._known_last, now)
        due = self.pending >= self.every or (
            self.pending > 0 and now - self._pending_since >= self.interval_s
        )
        if not due:
            return False
        self.checkpoint()
        return True

    def _fold(self, from_seq: int, until_seq: int, now: float) -> None:
        digest = self.log_hash
        sha256 = hashlib.sha256
        for batch in self._read_log(from_seq, until_seq):
            for raw in batch:
                if raw.seq != self.seq + 1:
                    raise RuntimeError(f"the log skipped from {self.seq} to {raw.seq}")
                digest = next_log_hash(digest, raw.seq, raw.subject, sha256(raw.data).digest())
                self.seq = raw.seq
                self.log_hash = digest
                if not raw.subject.endswith(_CHECKPOINT_SUFFIX):
                    if self.pending == 0:
                        self._pending_since = self._behind_since  # when it was first known
                    self.pending += 1
        if self._known_last > self.seq:
            # More came while this was read: their wait for a checkpoint starts now.
            self._behind_since = now
        self._save()

    def checkpoint(self) -> int:
        """Append a checkpoint of the log up to the last sequence read; its sequence."""
        hash_hex = self.log_hash.hex()
        event = LogCheckpointed(
            node_id=self.node_id,
            stream=self.stream,
            upto_seq=self.seq,
            log_hash=hash_hex,
            key=self.key.public_hex,
            signature=self.key.sign(checkpoint_message(self.stream, self.seq, hash_hex)),
        )
        (seq,) = self._append([ev.envelop(event, self.key.id, self._origin)], None)
        self.pending = 0
        self.checkpoints += 1
        self._save()
        log.info("checkpoint of the log up to %d appended at %d", event.upto_seq, seq)
        return seq

    def _load(self) -> tuple[int, bytes, int, float]:
        try:
            data = json.loads(self._state_file.read_text())
            if data.get("stream") != self.stream:
                raise ValueError("another stream")
            seq, digest = int(data["seq"]), bytes.fromhex(str(data["log_hash"]))
            if seq < 0 or len(digest) != 32:
                raise ValueError("out of range")
            pending = max(0, int(data.get("pending", 0)))
        except FileNotFoundError:
            return 0, ZERO_HASH, 0, 0.0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable (%s): reading the log from its start", self._state_file, exc)
            return 0, ZERO_HASH, 0, 0.0
        return seq, digest, pending, time.monotonic()

    def _save(self) -> None:
        state = {
            "stream": self.stream,
            "seq": self.seq,
            "log_hash": self.log_hash.hex(),
            "pending": self.pending,
        }
        write_private(self._state_file, json.dumps(state).encode())
