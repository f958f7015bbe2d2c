"""Raw requests to a node's API, as any program on NATS may send them, and what a refusal is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from claudedo_actors.api import pages
from events.wire import WireConnection
from tests.conftest import NodeProcess, _git, home_url

# The codes an error reply may carry (events/errors.py, the API's own).
ERROR_CODES = {"error", "invalid", "not_found", "ambiguous", "conflict", "unavailable",
               "too_large", "internal"}  # fmt: skip


class Api:
    """Raw requests to a node's API: bytes in, the decoded reply out (every message of it)."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.url = home_url(node.home, "operator")

    def raw(self, verb: str, data: bytes) -> dict[str, Any]:
        """The reply to `data` on `claudedo.api.<verb>`: one `{"ok"}` or `{"error"}` object, the
        parts of a paged reply joined. Fails the test on a reply that is not well formed."""
        conn = WireConnection(self.url, 30)
        try:
            inbox = f"{conn.inbox_prefix}.api-test"
            conn.send(f"SUB {inbox} 1\r\n".encode())
            conn.pub(f"claudedo.api.{verb}", inbox, data)
            frames = conn.frames()
            documents: list[Any] = []
            chunks: list[bytes] = []
            while True:
                _, _, raw_headers, payload = next(frames)
                headers = dict(
                    line.split(":", 1)
                    for line in raw_headers.decode().split("\r\n")[1:]
                    if ":" in line
                )
                chunks.append(payload)
                if pages.CONTINUED not in headers:
                    documents.append(msgspec.json.decode(b"".join(chunks)))
                    chunks = []
                following = headers.get(pages.NEXT)
                if following is None:
                    break
                conn.pub(following.strip(), inbox, b"")
        finally:
            conn.close()
        for doc in documents:
            assert isinstance(doc, dict) and len(doc) == 1 and doc.keys() <= {"ok", "error"}, doc
        errors = [doc["error"] for doc in documents if "error" in doc]
        if errors:
            assert len(errors) == 1 and "error" in documents[-1], documents
            error = errors[0]
            assert error.keys() == {"code", "message"} and error["code"] in ERROR_CODES, error
            message = error["message"]
            assert isinstance(message, str) and message and len(message) <= 500, error
            assert "\n" not in message and "\r" not in message, error
            return {"error": error}
        return {"ok": pages.join(doc["ok"] for doc in documents)}

    def ask(self, verb: str, payload: Any) -> dict[str, Any]:
        return self.raw(verb, msgspec.json.encode(payload))

    def ok(self, verb: str, payload: dict[str, Any] | None = None) -> Any:
        reply = self.ask(verb, payload or {})
        assert "ok" in reply, (verb, payload, reply)
        return reply["ok"]

    def last_seq(self) -> int:
        return int(self.ok("info")["last_seq"])


def assert_refused(api: Api, verb: str, payload: dict[str, Any], code: str = "invalid") -> str:
    """The request gets a one-line error with `code`, and the log is as it was."""
    before = api.last_seq()
    reply = api.ask(verb, payload)
    assert "error" in reply, (verb, payload, reply)
    assert reply["error"]["code"] == code, (verb, payload, reply)
    assert api.last_seq() == before, (verb, payload, "appended events")
    return str(reply["error"]["message"])


def make_repo(path: Path, commit: bool = True) -> Path:
    """A git work tree at `path`, with one commit unless `commit` is False."""
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    if commit:
        (path / "README.md").write_text("hello\n")
        _git(path, "add", "README.md")
        _git(path, "commit", "-q", "-m", "init")
    return path
