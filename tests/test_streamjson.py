"""The stream-json reader against real Claude Code 2.1.197 and 2.1.328 transcripts, and hostile
input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events as ev
from claudedo_actors.agent.stream_json import CAUSES, RunOutcome, StreamJsonReader

# Real transcripts of each CLI version (the README.md in each folder says how they were made).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VERSIONS = ("2.1.197", "2.1.328")


class Recorded(NamedTuple):
    """What a transcript's run ended with, read off the transcript by hand."""

    cause: str | None  # None: a success
    terminal_reason: str | None
    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None
    turn_count: int | None


# Every transcript of both versions, as the reader must see it when ClaudeDo stopped nothing.
OUTCOMES: dict[tuple[str, str], Recorded] = {
    ("2.1.197", "hello"): Recorded(None, "completed", 0.00081, 120, 30, 1),
    ("2.1.197", "write"): Recorded(None, "completed", 0.00162, 240, 60, 2),
    ("2.1.197", "bash"): Recorded(None, "completed", 0.00162, 240, 60, 2),
    ("2.1.197", "jschema"): Recorded(None, "completed", 0.00162, 240, 60, 2),
    ("2.1.197", "resume"): Recorded(None, "completed", 0.00162, 240, 60, 2),
    # 2.1.197 says `completed` after API errors and when not logged in.
    ("2.1.197", "e500"): Recorded("api_error", "completed", 0, 0, 0, 1),
    ("2.1.197", "e500_r0"): Recorded("api_error", "completed", 0, 0, 0, 1),
    ("2.1.197", "nologin"): Recorded("auth", "completed", 0, 0, 0, 1),
    ("2.1.197", "max_turns"): Recorded("max_turns", "max_turns", 0.00081, 120, 30, 2),
    ("2.1.197", "resume_missing"): Recorded("agent_error", None, 0, 0, 0, 0),
    # Interrupted by a SIGINT that ClaudeDo did not send (cancelled when it did, below).
    ("2.1.197", "sleep_int"): Recorded("agent_error", "aborted_tools", 0.00081, 120, 30, 3),
    ("2.1.197", "slow_int"): Recorded("agent_error", "aborted_streaming", 0, 0, 0, 2),
    ("2.1.328", "hello"): Recorded(None, "completed", 0.00108, 120, 30, 1),
    ("2.1.328", "write"): Recorded(None, "completed", 0.00216, 240, 60, 2),
    ("2.1.328", "bash"): Recorded(None, "completed", 0.00216, 240, 60, 2),
    ("2.1.328", "bash_sleep_blocked"): Recorded(None, "completed", 0.00216, 240, 60, 2),
    ("2.1.328", "jschema"): Recorded(None, "completed", 0.00108, 120, 30, 2),
    ("2.1.328", "resume"): Recorded(None, "completed", 0.00432, 240, 60, 2),
    ("2.1.328", "resume_othercwd"): Recorded(None, "completed", 0.00432, 240, 60, 2),
    ("2.1.328", "e500"): Recorded("api_error", "api_error", 0, 0, 0, 1),
    ("2.1.328", "e500_default"): Recorded("api_error", "api_error", 0, 0, 0, 1),
    ("2.1.328", "e500_r0"): Recorded("api_error", "api_error", 0, 0, 0, 1),
    ("2.1.328", "nologin"): Recorded("auth", "api_error", 0, 0, 0, 1),
    ("2.1.328", "max_turns"): Recorded("max_turns", "max_turns", 0.00108, 120, 30, 2),
    ("2.1.328", "budget"): Recorded("budget", "budget_exhausted", 0.00108, 0, 0, 1),
    ("2.1.328", "budget_multi"): Recorded("budget", "budget_exhausted", 0.00324, 240, 60, 3),
    ("2.1.328", "resume_missing"): Recorded("agent_error", None, 0, 0, 0, 0),
    ("2.1.328", "sleep_int"): Recorded("agent_error", "aborted_tools", 0.00108, 120, 30, 3),
    ("2.1.328", "slow_int"): Recorded("agent_error", "aborted_streaming", 0, 0, 0, 2),
    # SIGTERM: 2.1.328 prints no result line at all.
    ("2.1.328", "sleep_term"): Recorded("no_result", None, None, None, None, None),
}


def _lines(version: str, name: str) -> list[bytes]:
    return (FIXTURES / f"claude-code-{version}" / f"{name}.ndjson").read_bytes().splitlines()


def _exit_code(version: str, name: str) -> int:
    meta = (FIXTURES / f"claude-code-{version}" / f"{name}.meta").read_text()
    return int(meta.split("rc=")[1].split()[0])


def _read(version: str, name: str) -> tuple[StreamJsonReader, list[bytes], int]:
    lines = _lines(version, name)
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    return reader, lines, _exit_code(version, name)


def _feed(lines: list[bytes]) -> StreamJsonReader:
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    return reader


def _run_finished(out: RunOutcome) -> ev.RunFinished:
    """RunFinished as the slot builds it, through the codec's validation and back."""
    fields = msgspec.structs.asdict(out)
    fields.pop("session_id")
    event = ev.RunFinished(run_number=1, **fields)
    return msgspec.json.decode(msgspec.json.encode(event), type=ev.RunFinished)


def _result_line(version: str = "2.1.328", name: str = "e500_r0", **changes: Any) -> bytes:
    """A transcript's result line with some keys changed (None: removed)."""
    result = json.loads(_lines(version, name)[-1])
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return json.dumps(result).encode()


# --- every recorded transcript ---------------------------------------------------------------


def test_every_transcript_of_both_versions_has_its_expected_outcome() -> None:
    recorded = {
        (version, path.stem)
        for version in VERSIONS
        for path in (FIXTURES / f"claude-code-{version}").glob("*.ndjson")
    }
    assert recorded == set(OUTCOMES)


@pytest.mark.parametrize(("version", "name"), sorted(OUTCOMES))
def test_a_transcript_ends_as_the_run_did(version: str, name: str) -> None:
    reader, lines, code = _read(version, name)
    out = reader.outcome(code)
    expected = OUTCOMES[(version, name)]
    got = Recorded(
        out.cause, out.terminal_reason, out.cost_usd, out.tokens_in, out.tokens_out, out.turn_count
    )
    assert got == expected
    assert out.success is (expected.cause is None) and (out.error is None) is out.success
    parsed = [json.loads(line) for line in lines]
    assert out.session_id == next(p["session_id"] for p in parsed if "session_id" in p)
    assert out.permission_denials == ()  # none was recorded
    assert out.exit_code == code and out.line_count == len(lines)
    assert (
        out.transcript_sha256
        == hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
    )
    init = [p for p in parsed if p.get("subtype") == "init"]
    if init:
        assert reader.session is not None and reader.session.cli_version == version
        assert reader.session.session_id == out.session_id
        assert reader.session.model == init[0]["model"]
    else:
        assert reader.session is None
    results = [p for p in parsed if p.get("type") == "result"]
    if out.success:
        assert out.result == results[-1]["result"]
    assert _run_finished(out).terminal_reason == expected.terminal_reason


def test_2_1_328_result_lines_do_not_start_with_their_type_and_are_read_all_the_same() -> None:
    later = [_lines("2.1.328", n)[-1] for v, n in OUTCOMES if v == "2.1.328" and n != "sleep_term"]
    assert sum(not line.startswith(b'{"type"') for line in later) == len(later) - 1
    assert all(_feed([line]).outcome(1).turn_count is not None for line in later)


@pytest.mark.parametrize(
    ("version", "structured_output"),
    # 2.1.197's recorded answer did not use the StructuredOutput tool.
    [("2.1.197", None), ("2.1.328", {"answer": "mock"})],
)
def test_structured_output_is_kept(version: str, structured_output: Any) -> None:
    reader, _, code = _read(version, "jschema")
    assert reader.outcome(code).structured_output == structured_output


@pytest.mark.parametrize(
    ("version", "name", "retries"),
    [("2.1.197", "e500", 10), ("2.1.328", "e500", 2), ("2.1.328", "e500_default", 10)],
)
def test_api_errors_keep_their_status_and_retries_are_counted(
    version: str, name: str, retries: int
) -> None:
    reader, _, code = _read(version, name)
    assert reader.outcome(code).api_error_status == 500 and reader.api_retries == retries


@pytest.mark.parametrize(
    ("version", "name"),
    [
        ("2.1.197", "sleep_int"),
        ("2.1.197", "slow_int"),
        ("2.1.328", "sleep_int"),  # exits 0, is_error true
        ("2.1.328", "slow_int"),
        ("2.1.328", "sleep_term"),  # no result line
    ],
)
def test_a_run_we_stopped_is_cancelled_or_timed_out_whatever_it_printed(
    version: str, name: str
) -> None:
    reader, _, code = _read(version, name)
    cancelled = reader.outcome(code, cancelled=True)
    assert (cancelled.success, cancelled.cause, cancelled.error) == (
        False,
        "cancelled",
        "Cancelled.",
    )
    assert cancelled.terminal_reason == OUTCOMES[(version, name)].terminal_reason
    assert cancelled.session_id is not None
    assert reader.outcome(code, timed_out=True).cause == "timeout"


@pytest.mark.parametrize("version", VERSIONS)
def test_an_interrupt_we_did_not_send_is_an_agent_error_that_says_so(version: str) -> None:
    reader, _, code = _read(version, "sleep_int")
    out = reader.outcome(code)
    assert out.cause == "agent_error" and "interrupted (aborted_tools)" in (out.error or "")


def test_no_result_line_is_a_failure_with_stderr_and_exit_code() -> None:
    reader = _feed(_lines("2.1.328", "hello")[:1])
    out = reader.outcome(137, stderr_tail="Killed\n  badly\n")
    assert (
        out.cause == "no_result"
        and "137" in (out.error or "")
        and "Killed badly" in (out.error or "")
    )
    assert out.session_id is not None and out.terminal_reason is None


# --- causes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "cause"),
    [
        ({"api_error_status": 429, "api_error_type": "rate_limit_error"}, "rate_limited"),
        ({"api_error_status": 429, "api_error_type": None}, "rate_limited"),
        ({"api_error_status": None, "api_error_type": "rate_limit_error"}, "rate_limited"),
        ({"api_error_status": 529, "api_error_type": "overloaded_error"}, "overloaded"),
        ({"api_error_status": 529, "api_error_type": None}, "overloaded"),
        ({"api_error_status": None, "api_error_type": "overloaded_error"}, "overloaded"),
        ({"api_error_status": 401, "api_error_type": "authentication_error"}, "auth"),
        ({"api_error_status": 403, "api_error_type": "permission_error"}, "auth"),
        ({"api_error_status": 503, "api_error_type": "api_error"}, "api_error"),
        ({"api_error_status": 400, "api_error_type": "invalid_request_error"}, "api_error"),
        # The HTTP status wins over a type that says otherwise.
        ({"api_error_status": 500, "api_error_type": "overloaded_error"}, "api_error"),
        # Only terminal_reason says it was the API.
        ({"api_error_status": None, "api_error_type": None}, "api_error"),
        # Nothing says what went wrong.
        (
            {"api_error_status": None, "api_error_type": None, "terminal_reason": None},
            "agent_error",
        ),
    ],
)
def test_api_failures_have_the_cause_of_their_status_else_their_type(
    changes: dict[str, Any], cause: str
) -> None:
    out = _feed([_result_line(**changes)]).outcome(1)
    assert (out.success, out.cause) == (False, cause)
    assert out.api_error_status == changes["api_error_status"]


@pytest.mark.parametrize(
    ("changes", "cause"),
    [
        # 2.1.328: both say so.
        ({"subtype": "error_max_budget_usd", "terminal_reason": "budget_exhausted"}, "budget"),
        # 2.1.197 printed the subtype without a terminal_reason.
        ({"subtype": "error_max_budget_usd", "terminal_reason": None}, "budget"),
        ({"subtype": "success", "terminal_reason": "budget_exhausted"}, "budget"),
        ({"subtype": "error_max_turns", "terminal_reason": "max_turns"}, "max_turns"),
        ({"subtype": "error_max_turns", "terminal_reason": None}, "max_turns"),
        ({"subtype": "error_during_execution", "terminal_reason": "max_turns"}, "max_turns"),
    ],
)
def test_the_run_limits_have_their_cause_by_subtype_or_terminal_reason(
    changes: dict[str, Any], cause: str
) -> None:
    line = _result_line(name="max_turns", **changes)
    out = _feed([line]).outcome(1)
    assert (out.success, out.cause, out.terminal_reason) == (
        False,
        cause,
        changes["terminal_reason"],
    )
    assert out.error == "Reached maximum number of turns (1)"


def test_not_logged_in_is_auth_though_2_1_328_calls_it_an_api_error() -> None:
    out = _feed(_lines("2.1.328", "nologin")).outcome(1)
    assert (out.cause, out.terminal_reason, out.api_error_status) == ("auth", "api_error", None)
    assert out.error == "Not logged in · Please run /login"


def test_success_is_is_error_false_only() -> None:
    for is_error in (True, None, 0, "false"):
        line = _result_line(name="hello", is_error=is_error)
        assert not _feed([line]).outcome(0).success, is_error
    assert _feed([_result_line(name="hello", is_error=False)]).outcome(1).success


# --- the shape of a line ------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_keys_in_any_order_read_the_same(data: st.DataObject) -> None:
    version, name = data.draw(st.sampled_from(sorted(OUTCOMES)))
    lines = _lines(version, name)
    shuffled = []
    for line in lines:
        parsed = json.loads(line)
        keys = data.draw(st.permutations(list(parsed)))
        shuffled.append(json.dumps({k: parsed[k] for k in keys}).encode())
    code = _exit_code(version, name)
    expected, got = _feed(lines).outcome(code), _feed(shuffled).outcome(code)
    assert msgspec.structs.replace(got, transcript_sha256="") == msgspec.structs.replace(
        expected, transcript_sha256=""
    )


def test_unknown_keys_and_lines_are_ignored() -> None:
    lines = _lines("2.1.328", "hello")
    init, assistant, result = (json.loads(line) for line in lines)
    init["from_a_newer_cli"] = {"nested": [1, 2, {"x": None}]}
    result["terminal_details"] = ["more", "to", "come"]
    result["type_v2"] = "result"
    noisy = [
        json.dumps(init).encode(),
        b'{"type":"from_a_newer_cli","subtype":"init","session_id":"not-this-one"}',
        json.dumps(assistant).encode(),
        json.dumps(result).encode(),
    ]
    expected, got = _feed(lines), _feed(noisy)
    assert got.session == expected.session
    assert msgspec.structs.replace(
        got.outcome(0), line_count=0, transcript_sha256=""
    ) == msgspec.structs.replace(expected.outcome(0), line_count=0, transcript_sha256="")


def test_a_key_of_another_type_or_out_of_range_reads_as_absent_and_the_line_still_counts() -> None:
    line = _result_line(
        name="hello",
        num_turns="1",
        total_cost_usd=-1,
        duration_ms=2**60,
        usage={"input_tokens": 7, "output_tokens": "many"},
        terminal_reason=["completed"],
        permission_denials={"tool_name": "Bash"},
    )
    out = _feed([line]).outcome(0)
    assert out.success and out.result == "Scripted answer: nothing to do."
    assert (out.turn_count, out.cost_usd, out.duration_ms, out.terminal_reason) == (None,) * 4
    assert (out.tokens_in, out.tokens_out, out.permission_denials) == (7, None, ())
    _run_finished(out)


def test_the_last_result_line_counts() -> None:
    failed = _result_line(name="e500_r0")
    succeeded = _result_line(name="hello")
    assert _feed([failed, succeeded]).outcome(0).success
    assert _feed([succeeded, failed]).outcome(0).cause == "api_error"


def test_permission_denials_are_kept_as_the_event_carries_them() -> None:
    denials = [
        {"tool_name": "Bash", "tool_use_id": "toolu_1", "tool_input": {"command": "python3 -c 1"}},
        {"tool_name": "Write", "tool_use_id": "toolu_2", "tool_input": {"file_path": "x"}},
        {"tool_use_id": "toolu_3"},  # no tool name: not a denial ClaudeDo can record
        "Bash",
    ]
    out = _feed([_result_line(name="hello", permission_denials=denials)]).outcome(0)
    assert out.permission_denials == (
        ev.PermissionDenial(
            tool_name="Bash", tool_use_id="toolu_1", tool_input={"command": "python3 -c 1"}
        ),
        ev.PermissionDenial(
            tool_name="Write", tool_use_id="toolu_2", tool_input={"file_path": "x"}
        ),
    )
    assert _run_finished(out).permission_denials == out.permission_denials


@pytest.mark.parametrize("version", VERSIONS)
def test_garbage_unknown_types_and_a_10_mb_line_are_kept_not_fatal(version: str) -> None:
    reader, lines, code = _read(version, "hello")
    big = json.dumps({"type": "assistant", "message": {"text": "x" * 10_000_000}}).encode()
    noisy = _feed(
        [b"not json at all", b"\xff\xfe", b'{"type":"from_the_future","x":[1]}', big, *lines]
    )
    out = noisy.outcome(code)
    assert out.success and out.line_count == len(lines) + 4
    assert out.result == reader.outcome(code).result


# --- hostile input ------------------------------------------------------------------------

_KEYS = (
    "type",
    "subtype",
    "session_id",
    "is_error",
    "result",
    "errors",
    "num_turns",
    "usage",
    "total_cost_usd",
    "duration_ms",
    "api_error_status",
    "api_error_type",
    "terminal_reason",
    "permission_denials",
    "structured_output",
    "claude_code_version",
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["result", "system", "init", "api_retry", "success", "max_turns"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _json_values, max_size=10)
_real_lines = [line for key in sorted(OUTCOMES) for line in _lines(*key)]
_truncated = st.builds(
    lambda line, at: line[: at % max(len(line), 1)], st.sampled_from(_real_lines), st.integers(0)
)
_not_objects = _json_values.filter(lambda v: not isinstance(v, dict)).map(
    lambda v: json.dumps(v).encode()
)
_garbage = st.one_of(
    st.binary(max_size=200),
    _truncated,
    _not_objects,
    _objects.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),  # nested deeper than decoders go
    st.integers(1, 5000).map(lambda n: b'{"type":"result","result":' + b"[" * n),
)


def _never_fails(lines: list[bytes], exit_code: int = 1) -> RunOutcome:
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    out = reader.outcome(exit_code)
    assert out.line_count == len(lines)
    assert out.success or out.cause in CAUSES
    _run_finished(out)  # and the slot can always record it
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_garbage, max_size=20))
def test_any_lines_never_raise_and_always_make_a_valid_run_finished(lines: list[bytes]) -> None:
    _never_fails(lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_never_raise(lines: list[bytes]) -> None:
    _never_fails(lines)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"x", b"[", b'{"type":"result","result":"', b'{"type":"assistant","m":"']),
    st.integers(9_000_000, 10_500_000),
    st.booleans(),
)
def test_lines_of_10_mb_never_raise(start: bytes, size: int, closed: bool) -> None:
    line = start + b"a" * size + (b'"}' if closed and start.startswith(b"{") else b"")
    out = _never_fails([line])
    assert out.line_count == 1


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_garbage_between_the_lines_of_a_transcript_changes_nothing_but_the_count(
    data: st.DataObject,
) -> None:
    version, name = data.draw(st.sampled_from(sorted(OUTCOMES)))
    lines = _lines(version, name)
    noise = st.one_of(
        st.binary(max_size=100).filter(lambda b: not b.lstrip().startswith(b"{")),
        _truncated.filter(lambda b: not _parses_as_object(b)),
        _json_values.filter(lambda v: not isinstance(v, dict)).map(
            lambda v: json.dumps(v).encode()
        ),
    )
    noisy: list[bytes] = []
    for line in lines:
        noisy.extend(data.draw(st.lists(noise, max_size=3)))
        noisy.append(line)
    noisy.extend(data.draw(st.lists(noise, max_size=3)))
    code = _exit_code(version, name)
    expected, got = _feed(lines).outcome(code), _never_fails(noisy, code)
    assert msgspec.structs.replace(
        got, line_count=0, transcript_sha256=""
    ) == msgspec.structs.replace(expected, line_count=0, transcript_sha256="")
    assert got.line_count == len(noisy)


def _parses_as_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
