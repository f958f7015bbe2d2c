"""The three NATS roles and what the server lets each do (docs/security.md, decision 0020).

- node: append events, publish output, serve the API, its own JetStream needs; never delete,
  purge or reconfigure the event log;
- operator: call the API, read events and output (live, and replayed with its own consumers);
- reader: read events and output, replay them from any sequence; it can change nothing.

The same permissions make the embedded server's configuration (written into the home at each
start, passwords stored as bcrypt hashes) and `ops/nats/auth.conf` for a shared server; a test
checks that the two agree.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from events.credentials import Credential
from events.errors import Invalid
from events.log import OUTPUT_STREAM, STREAM

ROLES = ("node", "operator", "reader")
BCRYPT_COST = 6  # the passwords are 256 random bits: the cost only adds to every connect

_READ_STREAMS = (STREAM, OUTPUT_STREAM)


def _read_publish() -> list[str]:
    """What reading and replaying the streams publishes: JetStream's read-only API, consumer
    creation and fetches on our streams, flow control and acks of those consumers."""
    allowed = ["$JS.API.INFO", "$JS.API.STREAM.NAMES"]
    for stream in _READ_STREAMS:
        allowed += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
    return allowed


@dataclass(frozen=True)
class Permissions:
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]

    def as_config(self) -> dict[str, object]:
        publish: dict[str, object] = {"allow": list(self.publish_allow)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        return {"publish": publish, "subscribe": {"allow": list(self.subscribe_allow)}}


def permissions(role: str) -> Permissions:
    """What the server lets `role` publish and subscribe to."""
    # Readers and operators receive events and output through their own consumers, which
    # deliver to their inboxes: they may subscribe to nothing else. A subscription of theirs
    # on an event subject would let them have the server deliver a stream's messages to that
    # subject (a push consumer's deliver subject), where the event stream stores them.
    read_subscribe = ("_INBOX.>",)
    if role == "node":
        # The log is append-only also for nodes: what removes or rewrites events is denied
        # (the stream's deny_delete and deny_purge say the same inside the server).
        return Permissions(
            publish_allow=(
                "claudedo.evt.>", "claudedo.out.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>",
                "$KV.claudedo_nodes.>", "_INBOX.>",
            ),
            publish_deny=tuple(
                f"$JS.API.STREAM.{verb}.{STREAM}"
                for verb in ("DELETE", "PURGE", "UPDATE", "MSG.DELETE", "RESTORE")
            ),
            subscribe_allow=(
                "claudedo.api.>", "claudedo.evt.>", "claudedo.out.>", "_INBOX.>",
                "$KV.claudedo_nodes.>",
            ),
        )  # fmt: skip
    if role == "operator":
        return Permissions(("claudedo.api.>", *_read_publish()), (), read_subscribe)
    if role == "reader":
        return Permissions(tuple(_read_publish()), (), read_subscribe)
    raise Invalid(f"unknown role {role!r} (one of: {', '.join(ROLES)})")


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def authorization_block(users: dict[str, str], variables: bool = False) -> str:
    """The server configuration's `authorization` block: one user per role in `users`
    (role -> password or its bcrypt hash; with `variables`, the name of the environment
    variable that holds it), each with its role's permissions."""
    lines = ["authorization {"]
    for role in ROLES:
        perms = permissions(role).as_config()
        publish, subscribe = perms["publish"], perms["subscribe"]
        assert isinstance(publish, dict) and isinstance(subscribe, dict)
        lines.append(f"  {role.upper()} = {{")
        deny = f", deny: {_quoted(publish['deny'])}" if "deny" in publish else ""
        lines.append(f"    publish: {{allow: {_quoted(publish['allow'])}{deny}}}")
        lines.append(f"    subscribe: {{allow: {_quoted(subscribe['allow'])}}}")
        lines.append("  }")
    lines.append("  users: [")
    for role in ROLES:
        if role in users:
            password = f"${users[role]}" if variables else json.dumps(users[role])
            lines.append(
                f"    {{user: {role}, password: {password}, permissions: ${role.upper()}}}"
            )
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _bcrypt(password: str) -> str:
    import bcrypt

    # nats-server reads the $2a$ form of bcrypt hashes.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST, prefix=b"2a"))
    return hashed.decode()


class HomeCredentials:
    """A home's credentials, one file per role in `<home>/creds/` (0600, the folder 0700),
    made on first use and kept."""

    def __init__(self, creds_dir: Path) -> None:
        self.dir = creds_dir

    def path(self, role: str) -> Path:
        permissions(role)  # an unknown role is refused here, before any path is made
        return self.dir / f"{role}.json"

    def get(self, role: str) -> Credential:
        path = self.path(role)
        if not path.exists():
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            Credential(role, secrets.token_hex(32), role).write(path)
        return Credential.read(path)

    def existing(self, role: str) -> Credential | None:
        path = self.path(role)
        return Credential.read(path) if path.exists() else None

    def server_config(self) -> str:
        """The embedded server's authorization block, passwords as bcrypt hashes."""
        return authorization_block({role: _bcrypt(self.get(role).password) for role in ROLES})
