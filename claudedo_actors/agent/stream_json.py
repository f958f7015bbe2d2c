"""Claude Code's `--output-format stream-json` output: session, result, usage, failure cause.

Built against real transcripts of Claude Code 2.1.197 and 2.1.328 (tests/fixtures/). Every line
is parsed as a JSON object and read by key, never by position or prefix (2.1.328 moved `type`
towards the end of its result line). Unknown lines and keys are ignored, and a known key holding
a value of another type, or out of the range RunFinished can carry, reads as absent: neither
hides the rest of its line. Only `is_error == false` on the last `result` line is success: the
CLI sends `"subtype": "success"` with `"is_error": true` when not logged in or after API errors,
and 2.1.328 exits 0 after SIGINT. Lines that are not JSON, and lines of any length, are counted
and hashed like the others (the caller keeps them in the log).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

import events as ev

# Failure causes (docs/events.md): what RunFinished.cause and TaskFailed.cause say.
CAUSES = (
    "auth",
    "api_error",
    "rate_limited",
    "overloaded",
    "max_turns",
    "budget",
    "timeout",
    "cancelled",
    "no_result",
    "spawn_failed",
    "agent_error",
)

# The `terminal_reason` of a run interrupted by SIGINT (its tools, or the answer streaming).
_ABORTED = frozenset({"aborted_tools", "aborted_streaming"})

# An API error's cause by its HTTP status, else by its `api_error_type` (2.1.328 on); any other
# is `api_error`.
_CAUSE_BY_STATUS = {401: "auth", 403: "auth", 429: "rate_limited", 529: "overloaded"}
_CAUSE_BY_API_ERROR_TYPE = {
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
}


class _Line(msgspec.Struct):
    """The keys ClaudeDo reads from any stream-json line, each as whatever JSON it holds."""

    type: Any = None
    subtype: Any = None
    session_id: Any = None
    model: Any = None
    permissionMode: Any = None
    claude_code_version: Any = None
    is_error: Any = None
    result: Any = None
    errors: Any = None
    num_turns: Any = None
    usage: Any = None
    total_cost_usd: Any = None
    duration_ms: Any = None
    api_error_status: Any = None
    api_error_type: Any = None
    structured_output: Any = None
    terminal_reason: Any = None
    permission_denials: Any = None


_decode_line = msgspec.json.Decoder(_Line).decode

# RunFinished's field types carry the ranges every reader of the log can store.
_EVENT_TYPES = {f.name: f.type for f in msgspec.structs.fields(ev.RunFinished)}


def _fit(field: str, value: Any) -> Any:
    """`value` when RunFinished's `field` can carry it (type and range), else None."""
    try:
        return msgspec.convert(value, _EVENT_TYPES[field])
    except msgspec.ValidationError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _denials(value: Any) -> tuple[ev.PermissionDenial, ...]:
    """The result line's `permission_denials`, leaving out entries not of their shape."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        try:
            found.append(msgspec.convert(item, ev.PermissionDenial))
        except msgspec.ValidationError:
            continue
    return tuple(found)


class SessionInfo(msgspec.Struct, frozen=True):
    """What the `system`/`init` line says about the run."""

    session_id: str
    cli_version: str | None
    model: str | None
    permission_mode: str | None


class _Result(msgspec.Struct, frozen=True, kw_only=True):
    """The last `result` line, each value checked against RunFinished's field."""

    is_error: bool | None
    subtype: str | None
    terminal_reason: str | None
    result: str | None
    errors: tuple[str, ...]
    structured_output: Any
    turn_count: int | None
    tokens_in: int | None
    tokens_out: int | None
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    cost_usd: float | None
    duration_ms: int | None
    api_error_status: int | None
    api_error_type: str | None
    permission_denials: tuple[ev.PermissionDenial, ...]
    session_id: str | None

    @classmethod
    def of(cls, line: _Line) -> _Result:
        usage = line.usage if isinstance(line.usage, dict) else {}
        errors = line.errors if isinstance(line.errors, list) else []
        return cls(
            is_error=line.is_error if isinstance(line.is_error, bool) else None,
            subtype=_text(line.subtype),
            terminal_reason=_fit("terminal_reason", line.terminal_reason),
            result=_fit("result", line.result),
            errors=tuple(e for e in errors if isinstance(e, str)),
            structured_output=line.structured_output,
            turn_count=_fit("turn_count", line.num_turns),
            tokens_in=_fit("tokens_in", usage.get("input_tokens")),
            tokens_out=_fit("tokens_out", usage.get("output_tokens")),
            cache_read_tokens=_fit("cache_read_tokens", usage.get("cache_read_input_tokens")),
            cache_creation_tokens=_fit(
                "cache_creation_tokens", usage.get("cache_creation_input_tokens")
            ),
            cost_usd=_fit("cost_usd", line.total_cost_usd),
            duration_ms=_fit("duration_ms", line.duration_ms),
            api_error_status=_fit("api_error_status", line.api_error_status),
            api_error_type=_text(line.api_error_type),
            permission_denials=_denials(line.permission_denials),
            session_id=_text(line.session_id),
        )


class RunOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended, in RunFinished's terms (its fields by name, plus the session id)."""

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
    terminal_reason: str | None = None
    permission_denials: tuple[ev.PermissionDenial, ...] = ()


class StreamJsonReader:
    """Feed it every output line in order; ask it for the outcome when the process ended.

    Neither `feed` nor `outcome` raises, whatever the lines hold.
    """

    def __init__(self) -> None:
        self.line_count = 0
        self.api_retries = 0
        self.session: SessionInfo | None = None
        self._sha = hashlib.sha256()
        self._result: _Result | None = None

    def feed(self, line: bytes) -> SessionInfo | None:
        """Take one line (without its newline). Returns the session when this line opened it."""
        self.line_count += 1
        self._sha.update(line)
        self._sha.update(b"\n")
        try:
            parsed = _decode_line(line)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # Not JSON, not an object, or nested deeper than the decoder goes: kept in the
            # log, nothing to read.
            return None
        kind, subtype = parsed.type, parsed.subtype
        if kind == "result":
            self._result = _Result.of(parsed)  # the last one counts
        elif kind == "system" and subtype == "init" and self.session is None:
            session_id = _text(parsed.session_id)
            if session_id:
                self.session = SessionInfo(
                    session_id=session_id,
                    cli_version=_text(parsed.claude_code_version),
                    model=_text(parsed.model),
                    permission_mode=_text(parsed.permissionMode),
                )
                return self.session
        elif kind == "system" and subtype == "api_retry":
            self.api_retries += 1
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

        `cancelled` / `timed_out`: ClaudeDo stopped the process itself; whatever the agent
        printed then (an aborted result after SIGINT, or no result after SIGTERM), the run
        ends as `cancelled` / `timeout`.
        """
        r = self._result
        success = r is not None and r.is_error is False and not cancelled and not timed_out
        cause, error = (None, None)
        if not success:
            cause, error = _failure(r, exit_code, stderr_tail, cancelled, timed_out)
        return RunOutcome(
            success=success,
            exit_code=exit_code,
            cause=cause,
            result=r.result if r is not None else None,
            error=error,
            structured_output=r.structured_output if r is not None else None,
            turn_count=r.turn_count if r is not None else None,
            tokens_in=r.tokens_in if r is not None else None,
            tokens_out=r.tokens_out if r is not None else None,
            cache_read_tokens=r.cache_read_tokens if r is not None else None,
            cache_creation_tokens=r.cache_creation_tokens if r is not None else None,
            cost_usd=r.cost_usd if r is not None else None,
            duration_ms=r.duration_ms if r is not None else None,
            api_error_status=r.api_error_status if r is not None else None,
            line_count=self.line_count,
            transcript_sha256=self._sha.hexdigest(),
            session_id=self.session_id,
            terminal_reason=r.terminal_reason if r is not None else None,
            permission_denials=r.permission_denials if r is not None else (),
        )


def _failure(
    r: _Result | None, exit_code: int | None, stderr_tail: str, cancelled: bool, timed_out: bool
) -> tuple[str, str]:
    """The cause and error of a run that did not succeed."""
    if cancelled:
        return "cancelled", "Cancelled."
    if timed_out:
        return "timeout", "The run reached its time limit and was stopped."
    if r is None:
        tail = " ".join(stderr_tail.split())[-500:] or "no output on stderr"
        return "no_result", f"The agent exited with code {exit_code} and no result: {tail}"
    if r.terminal_reason in _ABORTED:
        return "agent_error", (
            f"Claude Code was interrupted ({r.terminal_reason}) by a signal ClaudeDo did not send."
        )
    text = r.result or "; ".join(r.errors) or f"failed ({r.subtype})"
    return _cause_of(r.subtype, r.terminal_reason, r.api_error_status, r.api_error_type, text), text


def _cause_of(
    subtype: str | None,
    terminal_reason: str | None,
    api_error_status: int | None,
    api_error_type: str | None,
    text: str,
) -> str:
    """The cause of a failed result line, from what 2.1.197 and 2.1.328 print.

    The limits first (their subtype, or 2.1.328's terminal_reason), then the API's answer: its
    HTTP status, else 2.1.328's `api_error_type`. Not being logged in has neither, only its
    text. Anything else is `agent_error`.
    """
    if subtype == "error_max_turns" or terminal_reason == "max_turns":
        return "max_turns"
    if subtype == "error_max_budget_usd" or terminal_reason == "budget_exhausted":
        return "budget"
    if api_error_status is not None:
        return _CAUSE_BY_STATUS.get(api_error_status, "api_error")
    if api_error_type is not None:
        return _CAUSE_BY_API_ERROR_TYPE.get(api_error_type, "api_error")
    if text.startswith(("Not logged in", "Invalid API key")):
        return "auth"
    if terminal_reason == "api_error":
        return "api_error"
    return "agent_error"
