"""A run's stream-json lines as a reader wants them: what the agent said, the tools it called
with their results, and what went wrong, for `claudedo log --readable` and the board.

Pure and forgiving: each line is read by key (never by position; 2.1.328 moved `type`), a
line that is not JSON or not known is shown as it is, and no line raises. Tool results are
matched to their calls by `tool_use_id`, so a reader can fold a call and its result together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# What an entry is: said (assistant text), tool (a call), tool_result, error, result (the run's
# last word), note (system lines: init, api_retry), raw (not JSON, or an unknown line).
KINDS = ("said", "tool", "tool_result", "error", "result", "note", "raw")
# Longer texts are cut for reading; the raw NDJSON keeps everything.
MAX_TEXT = 20_000


@dataclass(frozen=True)
class Entry:
    kind: str
    title: str
    body: str = ""
    tool_use_id: str | None = None
    is_error: bool = False


def entries(line: bytes | str) -> list[Entry]:
    """The readable entries of one stream-json line (an assistant message may hold several)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return [Entry("raw", "not JSON", _cut(text))]
    if not isinstance(data, dict):
        return [Entry("raw", "not an object", _cut(text))]
    kind = data.get("type")
    if kind == "assistant":
        return _assistant(data)
    if kind == "user":
        return _tool_results(data)
    if kind == "result":
        return [_result(data)]
    if kind == "system":
        return _system(data)
    return [Entry("raw", str(kind or "?"), _cut(text))]


def _blocks(data: dict[str, Any]) -> list[dict[str, Any]]:
    message = data.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _assistant(data: dict[str, Any]) -> list[Entry]:
    # A synthetic message the CLI makes of an API error (2.1.328 marks it is_api_error_message).
    api_error = bool(data.get("is_api_error_message") or data.get("error"))
    out: list[Entry] = []
    for block in _blocks(data):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            if api_error:
                out.append(Entry("error", "API error", _cut(block["text"]), is_error=True))
            else:
                out.append(Entry("said", "said", _cut(block["text"])))
        elif block.get("type") == "tool_use":
            name = str(block.get("name") or "tool")
            args = block.get("input")
            out.append(
                Entry("tool", f"{name} {_brief(args)}".strip(), _json(args), _id(block.get("id")))
            )
        elif block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            out.append(Entry("note", "thinking", _cut(block["thinking"])))
    return out


def _tool_results(data: dict[str, Any]) -> list[Entry]:
    out: list[Entry] = []
    for block in _blocks(data):
        if block.get("type") != "tool_result":
            continue
        content = block.get("content")
        if isinstance(content, list):
            content = "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        failed = block.get("is_error") is True
        body = _cut(str(content or ""))
        title = "tool error" if failed else "tool result"
        out.append(Entry("tool_result", title, body, _id(block.get("tool_use_id")), failed))
    return out


def _result(data: dict[str, Any]) -> Entry:
    failed = data.get("is_error") is not False
    # 2.1.197 says terminal_reason "completed" and subtype "success" on failures too.
    reason = next(
        (str(r) for r in (data.get("terminal_reason"), data.get("subtype"))
         if r and r not in ("completed", "success")),
        "",
    )  # fmt: skip
    facts = []
    if isinstance(data.get("num_turns"), int):
        facts.append(f"{data['num_turns']} turns")
    if isinstance(data.get("total_cost_usd"), int | float):
        facts.append(f"${data['total_cost_usd']:.4f}")
    title = ("failed" + (f" ({reason})" if reason else "")) if failed else "succeeded"
    if facts:
        title += ": " + ", ".join(facts)
    result = data.get("result")
    body = result if isinstance(result, str) else _json(result) if result is not None else ""
    return Entry("result", title, _cut(body), is_error=failed)


def _system(data: dict[str, Any]) -> list[Entry]:
    subtype = data.get("subtype")
    if subtype == "init":
        facts = [
            f"session {str(data.get('session_id') or '?')[:8]}",
            str(data.get("model") or ""),
            f"Claude Code {data['claude_code_version']}" if data.get("claude_code_version") else "",
        ]
        return [Entry("note", "started: " + ", ".join(f for f in facts if f))]
    if subtype == "api_retry":
        attempt, most = data.get("attempt"), data.get("max_retries")
        status = data.get("error_status")
        title = f"API retry {attempt}/{most}" + (f" after HTTP {status}" if status else "")
        return [Entry("error", title, _cut(str(data.get("error") or "")), is_error=True)]
    return [Entry("note", f"system/{subtype}")]


def _brief(args: Any) -> str:
    """A tool call's gist: its command, path or pattern, else its arguments, on one line."""
    if isinstance(args, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "description"):
            if isinstance(args.get(key), str):
                return _one_line(args[key], 100)
    return _one_line(_json(args), 100) if args not in (None, {}) else ""


def _json(value: Any) -> str:
    if value is None:
        return ""
    return _cut(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT} more characters in the raw log)"


def plain(entry: Entry) -> str:
    """An entry as terminal text: a marked first line, then its body indented."""
    mark = {"said": "", "tool": "→ ", "tool_result": "  ← ", "error": "! ", "result": "= "}
    head = mark.get(entry.kind, "· ") + (entry.title if entry.kind != "said" else "")
    if entry.kind == "said":
        return entry.body
    if entry.kind == "tool":
        return head  # the arguments are in the raw log; the gist is in the title
    body = entry.body
    if entry.kind == "tool_result":
        body = _one_line(body, 200)
        return f"{head}: {body}" if body else head
    return f"{head}\n  {body.replace(chr(10), chr(10) + '  ')}" if body else head
