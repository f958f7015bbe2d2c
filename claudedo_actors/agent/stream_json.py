"""Claude Code's `--output-format stream-json` output: session, result, usage, failure cause.

Built against real transcripts of Claude Code 2.1.197 (success, tools, API errors, not logged
in, resume, max turns, interrupts). Only `is_error` on the `result` line decides success: the
CLI sends `"subtype": "success"` with `"is_error": true` when not logged in or after API
errors. Unknown line types and fields are ignored, never fatal; lines that are not JSON, and
lines of any length, are counted and hashed like the others (the caller keeps them in the log).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

# Failure causes (docs/events.md): what RunFinished.cause and TaskFailed.cause say.
CAUSES = (
    "auth",
    "api_error",
    "rate_limited",
    "max_turns",
    "budget",
    "timeout",
    "cancelled",
    "no_result",
    "spawn_failed",
    "agent_error",
)


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Line(msgspec.Struct):
    """The fields ClaudeDo reads from any stream-json line; the rest is ignored."""

    type: str | None = None
    subtype: str | None = None
    session_id: str | None = None
    model: str | None = None
    permissionMode: str | None = None
    claude_code_version: str | None = None
    is_error: bool | None = None
    result: str | None = None
    num_turns: int | None = None
    usage: _Usage | None = None
    total_cost_usd: float | None = None
    duration_ms: int | None = None
    api_error_status: int | None = None
    structured_output: Any = None
    terminal_reason: str | None = None
    errors: list[str] | None = None


_decode_line = msgspec.json.Decoder(_Line).decode


class SessionInfo(msgspec.Struct, frozen=True):
    """What the `system`/`init` line says about the run."""

    session_id: str
    cli_version: str | None
    model: str | None
    permission_mode: str | None


class RunOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended, in RunFinished's terms."""

    success: bool
    exit_code: int | None
    cause: str | None
    result: str | None
    error: str | None
    structured_output: Any
    turn_count: int | None
    tokens_in: int | None
    tokens_out: int | None
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    cost_usd: float | None
    duration_ms: int | None
    api_error_status: int | None
    line_count: int
    transcript_sha256: str
    session_id: str | None


class StreamJsonReader:
    """Feed it every output line in order; ask it for the outcome when the process ended."""

    def __init__(self) -> None:
        self.line_count = 0
        self.api_retries = 0
        self.session: SessionInfo | None = None
        self._sha = hashlib.sha256()
        self._result: _Line | None = None

    def feed(self, line: bytes) -> SessionInfo | None:
        """Take one line (without its newline). Returns the session when this line opened it."""
        self.line_count += 1
        self._sha.update(line)
        self._sha.update(b"\n")
        try:
            parsed = _decode_line(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not JSON, or JSON of another shape: kept in the log, nothing to read
        if parsed.type == "system" and parsed.subtype == "init" and parsed.session_id:
            if self.session is None:
                self.session = SessionInfo(
                    session_id=parsed.session_id,
                    cli_version=parsed.claude_code_version,
                    model=parsed.model,
                    permission_mode=parsed.permissionMode,
                )
                return self.session
        elif parsed.type == "system" and parsed.subtype == "api_retry":
            self.api_retries += 1
        elif parsed.type == "result":
            self._result = parsed
        return None

    @property
    def session_id(self) -> str | None:
        if self.session is not None:
            return self.session.session_id
        return self._result.session_id if self._result is not None else None

    def outcome(
        self,
        exit_code: int | None,
        stderr_tail: str = "",
        cancelled: bool = False,
        timed_out: bool = False,
    ) -> RunOutcome:
        """The run's outcome once its process ended.

        `cancelled` / `timed_out`: ClaudeDo stopped the process itself.
        """
        r = self._result
        usage = r.usage if r is not None and r.usage is not None else _Usage()
        success = r is not None and r.is_error is False and not cancelled and not timed_out
        cause, error = (None, None)
        if not success:
            cause, error = self._failure(r, exit_code, stderr_tail, cancelled, timed_out)
        return RunOutcome(
            success=success,
            exit_code=exit_code,
            cause=cause,
            result=r.result if r is not None else None,
            error=error,
            structured_output=r.structured_output if r is not None else None,
            turn_count=r.num_turns if r is not None else None,
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_creation_tokens=usage.cache_creation_input_tokens,
            cost_usd=r.total_cost_usd if r is not None else None,
            duration_ms=r.duration_ms if r is not None else None,
            api_error_status=r.api_error_status if r is not None else None,
            line_count=self.line_count,
            transcript_sha256=self._sha.hexdigest(),
            session_id=self.session_id,
        )

    @staticmethod
    def _failure(
        r: _Line | None, exit_code: int | None, stderr_tail: str, cancelled: bool, timed_out: bool
    ) -> tuple[str, str]:
        if cancelled:
            return "cancelled", "Cancelled."
        if timed_out:
            return "timeout", "The run reached its time limit and was stopped."
        if r is None:
            tail = " ".join(stderr_tail.split())[-500:] or "no output on stderr"
            return "no_result", f"The agent exited with code {exit_code} and no result: {tail}"
        text = r.result or "; ".join(r.errors or []) or f"failed ({r.subtype})"
        subtype, reason = r.subtype or "", r.terminal_reason or ""
        status = r.api_error_status
        if subtype == "error_max_turns" or reason == "max_turns":
            return "max_turns", text
        if "budget" in subtype or "budget" in reason:
            return "budget", text
        if status in (401, 403) or text.startswith(("Not logged in", "Invalid API key")):
            return "auth", text
        if status == 429:
            return "rate_limited", text
        if status is not None:
            return "api_error", text
        return "agent_error", text
