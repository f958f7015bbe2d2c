"""Proof that the log is what was written: the hash chains, the running log hash, signed
checkpoints, and a verifier that checks them over the stored bytes.

- Each event's `prev` is the SHA-256 of its aggregate's previous stored message (set by
  `EventLog.append`).
- The log hash after message `s` is SHA-256(hash after s-1 || s as 8 bytes big-endian ||
  subject || NUL || SHA-256(data)), starting from 32 zero bytes: a hash over everything stored
  up to `s`, in order, subjects included.
- A node appends `LogCheckpointed` events now and then: the log hash at a sequence, signed
  with its ed25519 key (`checkpoint_message`).

`LogVerifier` is pure: fed the stored messages in order, it reports what does not hold, and
collects what needs the world outside the log to check (transcripts, commits). It needs no
NATS, so an export is checked with the same code as a live log.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from events.checkpoints import LogCheckpointed
from events.codec import DecodeError, Envelope, decode, encode
from events.log import RawEvent
from events.tasks import (
    RunFinished,
    RunStarted,
    WorktreeCommitted,
    WorktreeCreated,
    WorktreeDiscarded,
    WorktreeMerged,
)

ZERO_HASH = bytes(32)
# How many recent log hashes the verifier keeps to check a checkpoint against: a checkpoint
# covers the log up to the sequence that was last when its node read it, a few messages back.
CHECKPOINT_REACH = 65_536
# How many events after the last valid checkpoint are normal: a node checkpoints every 1,000
# events (or a minute after fewer), and its log goes on while it reads.
DEFAULT_MAX_UNVOUCHED = 2_000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def next_log_hash(before: bytes, seq: int, subject: str, data_digest: bytes) -> bytes:
    """The log hash after message `seq`, given the hash before it and its data's SHA-256."""
    return hashlib.sha256(
        before + seq.to_bytes(8, "big") + subject.encode() + b"\0" + data_digest
    ).digest()


def checkpoint_message(stream: str, upto_seq: int, log_hash: str) -> bytes:
    """The bytes a checkpoint's signature is over."""
    return f"claudedo-log-checkpoint:v1:{stream}:{upto_seq}:{log_hash}".encode()


def key_id(public_key_hex: str) -> str:
    """A key's id: the first 32 hex digits of the SHA-256 of its 32 raw bytes."""
    return sha256_hex(bytes.fromhex(public_key_hex))[:32]


class SigningKey:
    """An ed25519 private key (its 32-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_hex = raw.hex()
        self.id = key_id(self.public_hex)

    @staticmethod
    def new_seed() -> bytes:
        import os

        return os.urandom(32)

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()

    def __repr__(self) -> str:
        return f"SigningKey(id={self.id})"  # never the seed


def signature_valid(public_key_hex: str, signature_hex: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def chained(envelopes: Iterable[Envelope]) -> list[bytes]:
    """The stored bytes of `envelopes` appended in this order to an empty log, chained as
    `EventLog.append` chains them: for tools that write a log in bulk."""
    tips: dict[tuple[str, str], str | None] = {}
    out = []
    for env in envelopes:
        key = (env.aggregate, env.aggregate_id)
        data = encode(msgspec.structs.replace(env, prev=tips.get(key)))
        tips[key] = sha256_hex(data)
        out.append(data)
    return out


@dataclass(frozen=True)
class Discrepancy:
    """Something that does not hold, as one readable line."""

    where: str  # "seq 12", "task 3f2a…", "run 3f2a… #2", "log"
    what: str

    def line(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class RunRecord:
    """What the log says of one run's transcript."""

    task_id: str
    run_number: int
    log_path: str | None = None
    line_count: int | None = None
    transcript_sha256: str | None = None
    finished_seq: int | None = None


@dataclass
class CommitRecord:
    """A commit the log recorded for a task, and where it should be found."""

    task_id: str
    commit: str
    seq: int
    what: str  # "run 2's commit", "merge commit", "discarded head"
    repo: str | None = None
    kept_ref: str | None = None


@dataclass
class Checkpoint:
    seq: int
    upto_seq: int
    key_id: str
    node_id: str


@dataclass
class VerifyResult:
    discrepancies: list[Discrepancy] = field(default_factory=list)
    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0
    chained: int = 0
    unchained: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    runs: dict[tuple[str, int], RunRecord] = field(default_factory=dict)
    commits: list[CommitRecord] = field(default_factory=list)
    log_hash: str = ZERO_HASH.hex()
    unvouched: int = 0  # events other than checkpoints after the last valid checkpoint

    @property
    def vouched_upto(self) -> int:
        """The last sequence a valid checkpoint covers (0: none)."""
        return max((c.upto_seq for c in self.checkpoints), default=0)


class _Light(msgspec.Struct):
    """The envelope's chain fields, read without the event's validation (for a message that
    is not a valid event, so its chain is still followed)."""

    aggregate_id: str = ""
    prev: str | msgspec.UnsetType | None = msgspec.UNSET


_light = msgspec.json.Decoder(_Light)


class LogVerifier:
    """Feed every stored message in order (`feed`), then `finish`.

    `trusted` maps key ids to public keys (hex): a checkpoint signed by any other key is a
    discrepancy. `only` restricts the report to one aggregate id (the chain of every
    aggregate is still followed, so the log hash and checkpoints are checked in full).
    """

    def __init__(
        self,
        stream: str,
        trusted: dict[str, str],
        only: str | None = None,
        first_seq: int = 1,
        max_unvouched: int | None = None,
    ) -> None:
        self.stream = stream
        self.trusted = trusted
        self.only = only
        self.result = VerifyResult()
        self._expected_seq = first_seq
        self._log_hash = ZERO_HASH
        self._recent: deque[bytes] = deque(maxlen=CHECKPOINT_REACH)
        self._tips: dict[str, bytes] = {}  # subject's aggregate -> SHA-256 of its last message
        self._chains_began = False
        # Events other than checkpoints that no valid checkpoint covers yet (their seqs): a
        # log is only as good as its checkpoints, since anyone can compute chains.
        self._unvouched: deque[int] = deque()
        self.max_unvouched = DEFAULT_MAX_UNVOUCHED if max_unvouched is None else max_unvouched
        self._repos: dict[str, str] = {}

    def _report(self, where: str, what: str, agg_id: str | None = None) -> None:
        if self.only is None or agg_id is None or agg_id == self.only:
            self.result.discrepancies.append(Discrepancy(where, what))

    def feed(self, seq: int, subject: str, data: bytes) -> None:
        """One stored message, the next in the log."""
        self.feed_batch((RawEvent(seq, subject, data),))

    def feed_batch(self, messages: Iterable[RawEvent]) -> int:
        """Stored messages, in order; returns how many the verifier has seen in all."""
        result = self.result
        sha256 = hashlib.sha256
        recent = self._recent.append
        tips = self._tips
        notable = _NOTABLE
        log_hash = self._log_hash
        for raw in messages:
            seq, subject, data = raw.seq, raw.subject, raw.data
            if result.messages == 0:
                result.first_seq = seq
            if seq != self._expected_seq:
                if seq > self._expected_seq:
                    gap = _span(self._expected_seq, seq - 1)
                    self._report(f"seq {seq}", f"sequence(s) {gap} missing before it")
                else:
                    self._report(f"seq {seq}", f"out of order after {self._expected_seq - 1}")
            self._expected_seq = seq + 1
            result.messages += 1
            digest = sha256(data).digest()
            log_hash = sha256(
                log_hash + seq.to_bytes(8, "big") + subject.encode() + b"\0" + digest
            ).digest()
            self._log_hash = log_hash
            recent(log_hash)
            parts = subject.split(".")
            whole = len(parts) == 5
            agg_key = f"{parts[2]}.{parts[3]}" if whole else subject
            agg_id = parts[3] if whole else None
            try:
                env = decode(data)
            except DecodeError as exc:
                self._report(f"seq {seq}", f"not a valid event on {subject}: {exc}", agg_id)
                self._follow_chain_light(seq, agg_key, agg_id, data, digest)
                self._unvouched.append(seq)
                continue
            event = env.event
            cls = type(event)
            if (
                not whole
                or parts[4] != cls.__name__
                or parts[3] != env.aggregate_id
                or parts[2] != cls.AGGREGATE
            ):
                self._report(f"seq {seq}", f"stored on {subject}, but the event is {env.subject}")
            prev = env.prev
            before = tips.get(agg_key)
            if (
                prev is not msgspec.UNSET
                and self._chains_began
                and (prev == (None if before is None else before.hex()))
            ):
                # The common case, inline: a chained event whose prev is right.
                tips[agg_key] = digest
                result.chained += 1
            else:
                self._follow_chain(seq, agg_key, env.aggregate_id, prev, digest)
            if cls is not LogCheckpointed:
                self._unvouched.append(seq)
            if cls in notable:
                self._note(seq, env)
        self._log_hash = log_hash
        result.last_seq = self._expected_seq - 1
        return result.messages

    def _follow_chain_light(
        self, seq: int, agg_key: str, agg_id: str | None, data: bytes, digest: bytes
    ) -> None:
        try:
            light = _light.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._tips[agg_key] = digest
            return
        self._follow_chain(seq, agg_key, agg_id or light.aggregate_id, light.prev, digest)

    def _follow_chain(
        self,
        seq: int,
        agg_key: str,
        agg_id: str,
        prev: str | msgspec.UnsetType | None,
        digest: bytes,
    ) -> None:
        before = self._tips.get(agg_key)
        self._tips[agg_key] = digest
        if prev is msgspec.UNSET:
            self.result.unchained += 1
            if self._chains_began:
                self._report(f"seq {seq}", "no hash chain (prev), after chains began", agg_id)
            return
        self._chains_began = True
        self.result.chained += 1
        want = None if before is None else before.hex()
        if prev != want:
            said = "none" if prev is None else f"{prev[:12]}…"
            truth = (
                "it is the aggregate's first event"
                if want is None
                else (f"the aggregate's event before hashes to {want[:12]}…")
            )
            self._report(f"seq {seq}", f"chain broken: prev is {said}, but {truth}", agg_id)

    def _note(self, seq: int, env: Envelope) -> None:
        event = env.event
        task_id = env.aggregate_id
        if isinstance(event, RunStarted):
            self._run(task_id, event.run_number).log_path = event.log_path
        elif isinstance(event, RunFinished):
            run = self._run(task_id, event.run_number)
            run.line_count = event.line_count
            run.transcript_sha256 = event.transcript_sha256
            run.finished_seq = seq
        elif isinstance(event, WorktreeCreated):
            if event.repo:
                self._repos[task_id] = event.repo
        elif isinstance(event, WorktreeCommitted):
            self._commit(task_id, event.commit, seq, f"run {event.run_number}'s commit")
        elif isinstance(event, WorktreeMerged):
            self._commit(task_id, event.merge_commit, seq, "merge commit")
        elif isinstance(event, WorktreeDiscarded):
            if event.head_commit:
                self._commit(task_id, event.head_commit, seq, "discarded head", event.kept_ref)
        elif isinstance(event, LogCheckpointed):
            self._checkpoint(seq, env.aggregate_id, event)

    def _run(self, task_id: str, run_number: int) -> RunRecord:
        runs = self.result.runs
        run = runs.get((task_id, run_number))
        if run is None:
            run = runs[(task_id, run_number)] = RunRecord(task_id, run_number)
        return run

    def _commit(
        self, task_id: str, commit: str, seq: int, what: str, kept_ref: str | None = None
    ) -> None:
        if self.only is not None and task_id != self.only:
            return
        repo = self._repos.get(task_id)
        self.result.commits.append(CommitRecord(task_id, commit, seq, what, repo, kept_ref))

    def _checkpoint(self, seq: int, agg_id: str, event: LogCheckpointed) -> None:
        where = f"seq {seq}"
        if agg_id != key_id(event.key):
            self._report(where, f"checkpoint filed under {agg_id}, not its key's id")
            return
        if event.stream != self.stream:
            self._report(where, f"checkpoint of stream {event.stream}, not {self.stream}")
            return
        trusted = self.trusted.get(agg_id)
        if trusted is None:
            self._report(where, f"checkpoint signed by key {agg_id}, which is not trusted")
            return
        if trusted != event.key:
            self._report(where, f"checkpoint key does not match trusted key {agg_id}")
            return
        message = checkpoint_message(event.stream, event.upto_seq, event.log_hash)
        if not signature_valid(event.key, event.signature, message):
            self._report(where, f"checkpoint signature by key {agg_id} is not valid")
            return
        back = seq - event.upto_seq  # 1: the message just before this one
        if event.upto_seq >= seq or back > len(self._recent) - 1:
            self._report(where, f"checkpoint of seq {event.upto_seq} cannot be checked here")
            return
        actual = self._recent[-1 - back].hex()
        if actual != event.log_hash:
            self._report(
                where,
                f"log up to seq {event.upto_seq} hashes to {actual[:12]}…, "
                f"but key {agg_id} signed {event.log_hash[:12]}…",
            )
            return
        self.result.checkpoints.append(Checkpoint(seq, event.upto_seq, agg_id, event.node_id))
        unvouched = self._unvouched
        while unvouched and unvouched[0] <= event.upto_seq:
            unvouched.popleft()

    def finish(self, last_seq: int | None = None) -> VerifyResult:
        """The result; `last_seq` is the log's last sequence, if known (messages missing at
        its end are then reported too)."""
        result = self.result
        if last_seq is not None and last_seq >= self._expected_seq:
            self._report("log", f"sequence(s) {_span(self._expected_seq, last_seq)} missing")
        result.unvouched = len(self._unvouched)
        if result.unvouched > self.max_unvouched:
            first = self._unvouched[0]
            self._report(
                "log",
                f"{result.unvouched} events from seq {first} on are covered by no checkpoint of a "
                f"trusted key (more than {self.max_unvouched}: a node checkpoints every 1,000 "
                "events or a minute)",
            )
        result.log_hash = self._log_hash.hex()
        return result


# The events whose facts the verifier keeps or checks (see `_note`).
_NOTABLE = frozenset(
    {RunStarted, RunFinished, WorktreeCreated, WorktreeCommitted, WorktreeMerged,
     WorktreeDiscarded, LogCheckpointed}
)  # fmt: skip


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"
