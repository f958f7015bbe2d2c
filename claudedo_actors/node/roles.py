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

from events.credentials import Credential, inbox_prefix
from events.errors import Invalid
from events.log import OUTPUT_STREAM, STREAM

ROLES = ("node", "operator", "reader")
BCRYPT_COST = 6  # the passwords are 256 random bits: the cost only adds to every connect

# Nodes live in one NATS account, operators and readers in another (decision 0022). The
# clients' account imports the API and a read-only part of the nodes' JetStream API; nothing
# a client sends, and no answer to it, can reach the nodes' subjects, so none lands in a
# stream, whatever reply subject the client names.
NODES_ACCOUNT = "CLAUDEDO"
CLIENTS_ACCOUNT = "CLAUDEDO_CLIENTS"

_READ_STREAMS = (STREAM, OUTPUT_STREAM)


def client_services() -> list[tuple[str, bool]]:
    """The nodes' services a client reaches through an import: (subject, whether one request
    gets several answers). Reading and replaying the streams: account and stream info,
    messages by sequence or subject, consumers of the client's own and their batches, acks."""
    services = [("$JS.API.INFO", False), ("$JS.API.STREAM.NAMES", False)]
    for stream in _READ_STREAMS:
        services += [
            (f"$JS.API.STREAM.INFO.{stream}", False),
            (f"$JS.API.STREAM.MSG.GET.{stream}", False),
            (f"$JS.API.DIRECT.GET.{stream}", True),
            (f"$JS.API.DIRECT.GET.{stream}.>", True),
            (f"$JS.API.CONSUMER.CREATE.{stream}", False),
            (f"$JS.API.CONSUMER.CREATE.{stream}.>", False),
            (f"$JS.API.CONSUMER.INFO.{stream}.*", False),
            (f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*", True),
            (f"$JS.ACK.{stream}.>", False),
        ]
    return services


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
    """What the server lets `role` publish and subscribe to (in its account)."""
    if role == "node":
        # The log is append-only also for nodes: what removes or rewrites events is denied
        # (the stream's deny_delete and deny_purge say the same inside the server).
        return Permissions(
            publish_allow=(
                "claudedo.evt.>", "claudedo.out.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>",
                "$KV.claudedo_nodes.>", "_INBOX.>", "_R_.>",
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
    # Operators and readers receive events and output through their own pull consumers,
    # whose answers come to their inboxes: they may subscribe to nothing else.
    read = tuple(subject for subject, _ in client_services())
    own_inbox = (inbox_prefix(role) + ".>",)
    if role == "operator":
        return Permissions(("claudedo.api.>", *read), (), own_inbox)
    if role == "reader":
        return Permissions(read, (), own_inbox)
    raise Invalid(f"unknown role {role!r} (one of: {', '.join(ROLES)})")


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _variable(role: str) -> str:
    # Not the bare role: `operator` is a key of nats-server's configuration.
    return f"{role.upper()}_PERMISSIONS"


def _permission_variables() -> list[str]:
    """One configuration variable per role (`NODE_PERMISSIONS = {...}`), which more users of
    that role can name (`permissions: $NODE_PERMISSIONS`)."""
    lines = []
    for role in ROLES:
        perms = permissions(role).as_config()
        publish, subscribe = perms["publish"], perms["subscribe"]
        assert isinstance(publish, dict) and isinstance(subscribe, dict)
        deny = f", deny: {_quoted(publish['deny'])}" if "deny" in publish else ""
        lines += [
            f"{_variable(role)} = {{",
            f"  publish: {{allow: {_quoted(publish['allow'])}{deny}}}",
            f"  subscribe: {{allow: {_quoted(subscribe['allow'])}}}",
            "}",
        ]
    return lines


def accounts_block(users: dict[str, str], variables: bool = False) -> str:
    """The server configuration's roles: a variable per role's permissions, then the
    `accounts` block: the nodes' account with JetStream and its exports, the clients' with
    the imports; one user per role in `users` (role -> password or its bcrypt hash; with
    `variables`, the name of the environment variable that holds it)."""

    def users_of(roles: tuple[str, ...]) -> list[str]:
        lines = ["    users: ["]
        for role in (r for r in roles if r in users):
            password = f"${users[role]}" if variables else json.dumps(users[role])
            lines.append(
                f"      {{user: {role}, password: {password}, permissions: ${_variable(role)}}}"
            )
        return [*lines, "    ]"]

    services = [("claudedo.api.>", False), *client_services()]
    lines = [*_permission_variables(), "accounts {", f"  {NODES_ACCOUNT}: {{"]
    lines.append("    jetstream: enabled")
    lines += users_of(("node",))
    lines.append("    exports: [")
    for subject, several in services:
        answers = ", response_type: stream" if several else ""
        lines.append(f"      {{service: {json.dumps(subject)}{answers}}}")
    lines += ["    ]", "  }", f"  {CLIENTS_ACCOUNT}: {{"]
    lines += users_of(("operator", "reader"))
    lines.append("    imports: [")
    for subject, _ in services:
        lines.append(
            f"      {{service: {{account: {NODES_ACCOUNT}, subject: {json.dumps(subject)}}}}}"
        )
    lines += ["    ]", "  }", "}"]
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
        """The embedded server's accounts and users, passwords as bcrypt hashes."""
        return accounts_block({role: _bcrypt(self.get(role).password) for role in ROLES})
