"""A scripted Anthropic Messages API on loopback, for end-to-end runs of the real Claude Code CLI.

The model is a script: each turn of the main conversation (requests that offer tools) gets the
next scripted reply, chosen by how many assistant turns the request already carries. Replies
stream as the real API streams them (server-sent events). Every request is recorded. A HEAD of
any path is answered 200: the CLI's reachability check before its first request (`HEAD /` from
2.1.197; `HEAD /api/hello` from 2.1.328, which skips it with
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-sonnet-4-6"


@dataclass(frozen=True)
class Text:
    """The model answers with text and ends its turn."""

    text: str


@dataclass(frozen=True)
class Tool:
    """The model calls a tool; `input` may use {cwd} for the session's working directory."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Fail:
    """The API answers with an HTTP error."""

    status: int = 500


Step = Text | Tool | Fail
# Picks the reply of a main-conversation request: (request body, working directory) -> step.
Script = Callable[[dict[str, Any], str], Step]


def by_turn(*steps: Step) -> Script:
    """Step N for a request that already holds N assistant turns (the last step repeats)."""

    def pick(body: dict[str, Any], cwd: str) -> Step:
        turns = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        return steps[min(turns, len(steps) - 1)]

    return pick


@dataclass
class ScriptedApi:
    """The server; `script` may be swapped between tests."""

    script: Script = field(default_factory=lambda: by_turn(Text("Done.")))
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ScriptedApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                api.paths.append(f"HEAD {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                api.paths.append(f"GET {self.path}")
                self._json(404, {"type": "error", "error": {"type": "not_found_error"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                api.paths.append(f"POST {self.path}")
                if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
                    self._json(404, {"type": "error", "error": {"type": "not_found_error"}})
                    return
                body = json.loads(raw or b"{}")
                api.requests.append(body)
                step = api.script(body, _cwd_of(body)) if body.get("tools") else Text("OK")
                if isinstance(step, Fail):
                    self._json(
                        step.status,
                        {"type": "error", "error": {"type": "api_error",
                                                    "message": "scripted internal error"}},
                    )  # fmt: skip
                    return
                if isinstance(step, Tool):
                    step = Tool(step.name, with_cwd(step.input, _cwd_of(body)))
                self._stream(step, body.get("model") or MODEL)

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, step: Text | Tool, model: str) -> None:
                events = _events(step, model)
                data = "".join(
                    f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def main_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("tools")]


def _cwd_of(body: dict[str, Any]) -> str:
    """The session's working directory, as the CLI tells the model: in the system prompt
    (2.1.197), or in the environment context it puts in the first user message (2.1.328)."""
    texts = [_text_of(body.get("system"))]
    texts += [_text_of(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)]
    for text in texts:
        found = re.search(r"(?:Primary working directory|Working directory): ([^\n]+)", text)
        if found:
            return found.group(1).strip()
    return ""


def _text_of(content: Any) -> str:
    """The text of a system prompt or message: a string, or its text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _events(step: Text | Tool, model: str) -> list[dict[str, Any]]:
    usage = {
        "input_tokens": 120,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }
    if isinstance(step, Text):
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": step.text}
        stop_reason = "end_turn"
    else:
        block = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:24]}",
            "name": step.name,
            "input": {},
        }
        delta = {"type": "input_json_delta", "partial_json": json.dumps(step.input)}
        stop_reason = "tool_use"
    return [
        start,
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]


def with_cwd(value: Any, cwd: str) -> Any:
    """Fill {cwd} in a tool input."""
    if isinstance(value, str):
        return value.replace("{cwd}", cwd)
    if isinstance(value, dict):
        return {k: with_cwd(v, cwd) for k, v in value.items()}
    return value
