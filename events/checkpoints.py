"""Events of the log itself: signed checkpoints over everything stored before them."""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from events._base import Event


class LogEvent(Event, frozen=True, kw_only=True):
    """An event of the log aggregate: one instance per signing key (its id is the key's)."""

    AGGREGATE: ClassVar[str] = "log"


Hex64 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
Hex128 = Annotated[str, Meta(pattern="^[0-9a-f]{128}$")]
Sequence = Annotated[int, Meta(ge=1, le=2**53)]


class LogCheckpointed(LogEvent, frozen=True, kw_only=True):
    """A node vouches for the log up to `upto_seq`: `log_hash` is the running hash over every
    message stored up to it (events.audit.LogHash), signed with the node's ed25519 key.

    The aggregate id is the key's id (events.audit.key_id), so each key's checkpoints are a
    chain of their own; `key` is the public key (32 bytes, hex), `signature` the ed25519
    signature (64 bytes, hex) of events.audit.checkpoint_message(stream, upto_seq, log_hash).
    """

    node_id: str
    stream: str
    upto_seq: Sequence
    log_hash: Hex64
    key: Hex64
    signature: Hex128


LOG_EVENTS: tuple[type[LogEvent], ...] = (LogCheckpointed,)
