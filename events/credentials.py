"""NATS credentials: a user and its password, kept in a 0600 JSON file, never printed.

A node, the CLI and any other program connect with one of these (docs/security.md); the file
is what `claudedo creds ROLE --out FILE` writes. The password is left out of `repr()` so that
a credential reaching a log line or an error message shows nothing secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.errors import Invalid

CREDS_ENV = "CLAUDEDO_NATS_CREDS"  # the CLI's (and any client's) credentials file
NODE_CREDS_ENV = "CLAUDEDO_NODE_CREDS"  # a node's, for `claudedo up --nats`


def inbox_prefix(role: str) -> str:
    """Where a role's connections take their replies (`role`: its user's name will do): an
    operator's and a reader's inboxes are their role's own, so a reader does not see an
    operator's replies; anyone else's are plain `_INBOX.`."""
    return f"_INBOX.{role}" if role in ("operator", "reader") else "_INBOX"


@dataclass(frozen=True)
class Credential:
    """Who connects: `user` and `password` (`role` says what the server lets it do)."""

    user: str
    password: str = field(repr=False)
    role: str = ""

    def nats_options(self) -> dict[str, Any]:
        """The keyword arguments of `nats.connect` that log in as this user. An operator's and
        a reader's replies come to inboxes of their role's own (`_INBOX.<role>.`), the only
        subjects the server lets them subscribe to (docs/security.md)."""
        return {
            "user": self.user,
            "password": self.password,
            "inbox_prefix": self.inbox_prefix,
        }

    @property
    def inbox_prefix(self) -> str:
        """The inbox prefix of this credential's role (its user's name when it has none)."""
        return inbox_prefix(self.role or self.user)

    def write(self, path: Path, replace: bool = True) -> None:
        """Write the file readable by its owner alone (0600), in place of any other; with
        `replace` False, FileExistsError when `path` exists (never overwritten)."""
        data = json.dumps({"role": self.role, "user": self.user, "password": self.password})
        write_private(path, (data + "\n").encode(), replace)

    @staticmethod
    def read(path: str | os.PathLike[str]) -> Credential:
        """The credential in `path`; Invalid, in one line without its content, if it is not one."""
        where = Path(path)
        try:
            data = json.loads(where.read_text())
        except FileNotFoundError:
            raise Invalid(f"credentials file {where} does not exist") from None
        except OSError as exc:
            raise Invalid(f"cannot read credentials file {where}: {exc.strerror}") from None
        except ValueError:
            raise Invalid(f"credentials file {where} is not JSON") from None
        if not isinstance(data, dict):
            raise Invalid(f"credentials file {where} holds no user and password")
        user, password, role = data.get("user"), data.get("password"), data.get("role", "")
        if not (isinstance(user, str) and user and isinstance(password, str) and password):
            raise Invalid(f"credentials file {where} holds no user and password")
        return Credential(user, password, role if isinstance(role, str) else "")


def url_user(url: str) -> str | None:
    """The user (or token) a NATS URL logs in with, if it names one."""
    from urllib.parse import urlparse

    first = url.split(",")[0].strip()
    return urlparse(first if "://" in first else f"nats://{first}").username or None


def connect_options(url: str, credential: Credential | None) -> dict[str, Any]:
    """The keyword arguments of `nats.connect` for `url` as `credential`'s user, or as the
    user the URL names (whose inboxes follow its role's too)."""
    if credential is not None:
        return credential.nats_options()
    return {"inbox_prefix": inbox_prefix(url_user(url) or "")}


def redact_url(url: str) -> str:
    """`url` (or a comma-separated list of them) without user, password or token: everything
    of the authority up to its last `@` goes, whatever characters a password holds."""
    parts = []
    for one in url.split(","):
        one = one.strip()
        scheme, sep, rest = one.partition("://")
        if not sep:
            scheme, rest = "", one
        # The authority ends at the first "/" after the last "@" (a password may hold "/").
        at = rest.rfind("@")
        if at >= 0:
            rest = rest[at + 1 :]
        parts.append(f"{scheme}://{rest}" if sep else rest)
    return ",".join(parts)


def write_private(path: Path, data: bytes, replace: bool = True) -> None:
    """Write `path` whole, readable by its owner alone (0600): a new temporary file of a
    random name (never following a link), synced, then moved in place (`replace`) or linked
    to a name that must not exist yet. Nothing is left behind on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists, whatever appeared meanwhile
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
