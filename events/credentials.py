"""NATS credentials: a user and its password, kept in a 0600 JSON file, never printed.

A node, the CLI and any other program connect with one of these (docs/security.md); the file
is what `claudedo creds ROLE --out FILE` writes. The password is left out of `repr()` so that
a credential reaching a log line or an error message shows nothing secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from events.errors import Invalid

CREDS_ENV = "CLAUDEDO_NATS_CREDS"


@dataclass(frozen=True)
class Credential:
    """Who connects: `user` and `password` (`role` says what the server lets it do)."""

    user: str
    password: str = field(repr=False)
    role: str = ""

    def nats_options(self) -> dict[str, Any]:
        """The keyword arguments of `nats.connect` that log in as this user."""
        return {"user": self.user, "password": self.password}

    def write(self, path: Path) -> None:
        """Write the file readable by its owner alone (0600), created in place of any other."""
        data = json.dumps({"role": self.role, "user": self.user, "password": self.password})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (data + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

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


def redact_url(url: str) -> str:
    """`url` (or a comma-separated list of them) without user, password or token."""
    parts = []
    for one in url.split(","):
        one = one.strip()
        parsed = urlparse(one if "://" in one else f"nats://{one}")
        if parsed.username is None and parsed.password is None:
            parts.append(one)
            continue
        host = parsed.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        parts.append(urlunparse(parsed._replace(netloc=netloc)))
    return ",".join(parts)
