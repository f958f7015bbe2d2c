"""The ClaudeDo home folder: where a node keeps its NATS store, projection, id and lock."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from events.errors import ClaudeDoError

if TYPE_CHECKING:
    from events.audit import SigningKey

# platformdirs and uuid are imported where they are used: every CLI command reads its home,
# and its start-up is most of its round trip.


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """`--home`, else `CLAUDEDO_HOME`, else the per-user data folder."""
    chosen = home or os.environ.get("CLAUDEDO_HOME")
    if not chosen:
        import platformdirs

        chosen = platformdirs.user_data_dir("claudedo")
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Home:
    """Named paths inside one home folder."""

    root: Path

    @property
    def lock_file(self) -> Path:
        return self.root / "node.lock"

    @property
    def node_file(self) -> Path:
        """Written by a running node: how clients reach it (see NodeAddress)."""
        return self.root / "node.json"

    @property
    def node_id_file(self) -> Path:
        return self.root / "node_id"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def nats_pid_file(self) -> Path:
        return self.root / "nats" / "nats-server.pid"

    @property
    def projection_file(self) -> Path:
        return self.root / "projection.duckdb"

    @property
    def worktrees_dir(self) -> Path:
        return self.root / "worktrees"

    @property
    def sandboxes_dir(self) -> Path:
        return self.root / "sandboxes"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def creds_dir(self) -> Path:
        """One credentials file per NATS role (roles.HomeCredentials)."""
        return self.root / "creds"

    @property
    def nats_config_file(self) -> Path:
        """The embedded server's configuration: its users and permissions (bcrypt hashes, no
        passwords) and how often it syncs its store."""
        return self.root / "nats" / "server.conf"

    @property
    def keys_dir(self) -> Path:
        """The node's signing key (`node.ed25519`, 0600) and the public keys `claudedo audit
        verify` trusts (`trusted/<key id>.pub`: this node's, and any the user adds)."""
        return self.root / "keys"

    @property
    def checkpoint_file(self) -> Path:
        """Where the node's checkpointer keeps the log hash it has reached."""
        return self.root / "checkpoint.json"

    def signing_key(self) -> SigningKey:
        """The node's ed25519 key: made on first use (its public key trusted at once), then
        read back. The seed is written 0600 and never leaves the home."""
        from events.audit import SigningKey

        path = self.keys_dir / "node.ed25519"
        try:
            seed = bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            from events.credentials import write_private

            seed = SigningKey.new_seed()
            try:
                write_private(path, seed.hex().encode() + b"\n", replace=False)
            except FileExistsError:  # another process made it first: use that one
                seed = bytes.fromhex(path.read_text().strip())
        except ValueError:
            raise ClaudeDoError(f"{path} is not a key ({len(path.read_bytes())} bytes)") from None
        key = SigningKey(seed)
        trusted = self.keys_dir / "trusted" / f"{key.id}.pub"
        if not trusted.exists():
            trusted.parent.mkdir(parents=True, exist_ok=True)
            trusted.write_text(key.public_hex + "\n")
        return key

    @property
    def web_token_file(self) -> Path:
        return self.root / "web-token"

    def web_token(self) -> str:
        """The board's access token: made on first use (0600), then read back. Whoever has
        it (or the login link holding it) can do on the board what the CLI can."""
        import secrets

        path = self.web_token_file
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            from events.credentials import write_private

            token = secrets.token_urlsafe(32)
            try:
                write_private(path, token.encode() + b"\n", replace=False)
            except FileExistsError:
                token = path.read_text().strip()
        if len(token) < 32:
            raise ClaudeDoError(f"{path} holds no token: remove it, and the node makes one")
        return token

    def trusted_keys(self) -> dict[str, str]:
        """Key id -> public key (hex) of every key in `keys/trusted/`."""
        return read_public_keys(self.keys_dir / "trusted")

    def protect(self) -> int | None:
        """Make the home folder its owner's alone (0700): it holds credentials, the log's
        store and the agents' work. Returns the mode it had when that was wider."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        before = self.root.stat().st_mode & 0o777
        os.chmod(self.root, 0o700)
        return before if before & 0o077 else None

    def write_private(self, path: Path, text: str) -> None:
        """Write `path` readable by its owner alone (0600), replacing it whole."""
        from events.credentials import write_private

        write_private(path, text.encode())

    def node_id(self) -> str:
        """Stable per home: made once, then read back on every start."""
        path = self.node_id_file
        if path.exists():
            return path.read_text().strip()
        import uuid

        self.root.mkdir(parents=True, exist_ok=True)
        host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
        node_id = f"{host[:40] or 'node'}-{uuid.uuid4().hex[:8]}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(node_id + "\n")
        os.replace(tmp, path)
        return node_id


def read_public_keys(folder: Path) -> dict[str, str]:
    """Key id -> public key (hex) of each `*.pub` file in `folder` (none if it is missing).
    A file that is not a public key is an error, not a silently smaller set of keys."""
    from events.audit import key_id

    keys: dict[str, str] = {}
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        text = path.read_text(errors="replace").strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ClaudeDoError(f"{path.name} is not an ed25519 public key (64 hex digits)")
        keys[key_id(text)] = text
    return keys


@dataclass(frozen=True)
class NodeAddress:
    """What a running node publishes in its home for clients."""

    node_id: str
    nats_url: str
    pid: int

    def write(self, home: Home) -> None:
        home.write_private(home.node_file, json.dumps(self.__dict__))

    @staticmethod
    def read(home: Home) -> NodeAddress | None:
        try:
            data = json.loads(home.node_file.read_text())
            return NodeAddress(str(data["node_id"]), str(data["nats_url"]), int(data["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
