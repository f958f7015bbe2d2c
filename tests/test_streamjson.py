"""The stream-json reader against real Claude Code 2.1.197 transcripts, and hostile input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claudedo_actors.agent.stream_json import CAUSES, StreamJsonReader

# Real transcripts of the CLI (README.md in that folder says how they were captured).
TRANSCRIPTS = Path(__file__).resolve().parent / "fixtures" / "claude-code-2.1.197"


def _read(name: str) -> tuple[StreamJsonReader, list[bytes], int | None]:
    lines = (TRANSCRIPTS / f"{name}.ndjson").read_bytes().splitlines()
    meta = (TRANSCRIPTS / f"{name}.meta").read_text()
    exit_code = int(meta.split("rc=")[1].split()[0])
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    return reader, lines, exit_code


def _session_of(lines: list[bytes]) -> str:
    return str(json.loads(lines[0])["session_id"])


@pytest.mark.parametrize("name", ["hello", "write", "bash", "jschema", "resume"])
def test_successful_transcripts_are_successes_with_usage_and_cost(name: str) -> None:
    reader, lines, code = _read(name)
    out = reader.outcome(code)
    assert out.success and out.cause is None and out.error is None
    assert out.session_id == _session_of(lines)
    assert reader.session is not None and reader.session.cli_version == "2.1.197"
    assert reader.session.model == "claude-sonnet-4-6"
    assert out.tokens_in and out.tokens_out and out.cost_usd and out.turn_count
    assert out.line_count == len(lines)
    assert (
        out.transcript_sha256
        == hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
    )


def test_structured_output_is_kept() -> None:
    reader, _, code = _read("jschema")
    result = json.loads((TRANSCRIPTS / "jschema.ndjson").read_bytes().splitlines()[-1])
    assert reader.outcome(code).structured_output == result.get("structured_output")


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("nologin", "auth"),  # subtype "success" with is_error true
        ("e500", "api_error"),
        ("e500_r0", "api_error"),
        ("max_turns", "max_turns"),
        ("resume_missing", "agent_error"),
        ("sleep_int", "agent_error"),
        ("slow_int", "agent_error"),
    ],
)
def test_failed_transcripts_have_their_cause(name: str, cause: str) -> None:
    reader, lines, code = _read(name)
    out = reader.outcome(code)
    assert not out.success and out.cause == cause and out.error
    assert out.session_id == json.loads(lines[-1])["session_id"]


def test_api_errors_keep_their_status_and_retries_are_counted() -> None:
    reader, _, code = _read("e500")
    out = reader.outcome(code)
    assert out.api_error_status == 500 and reader.api_retries == 10


def test_a_run_we_stopped_is_cancelled_or_timed_out_whatever_it_printed() -> None:
    reader, _, code = _read("sleep_int")
    assert reader.outcome(code, cancelled=True).cause == "cancelled"
    assert reader.outcome(code, cancelled=True).error == "Cancelled."
    assert reader.outcome(code, timed_out=True).cause == "timeout"


def test_no_result_line_is_a_failure_with_stderr_and_exit_code() -> None:
    reader = StreamJsonReader()
    reader.feed((TRANSCRIPTS / "hello.ndjson").read_bytes().splitlines()[0])
    out = reader.outcome(137, stderr_tail="Killed\n  badly\n")
    assert (
        out.cause == "no_result"
        and "137" in (out.error or "")
        and "Killed badly" in (out.error or "")
    )
    assert out.session_id is not None


def test_garbage_unknown_types_and_a_10_mb_line_are_kept_not_fatal() -> None:
    reader, lines, code = _read("hello")
    big = json.dumps({"type": "assistant", "message": {"text": "x" * 10_000_000}}).encode()
    noisy = StreamJsonReader()
    for line in [
        b"not json at all",
        b"\xff\xfe",
        b'{"type":"from_the_future","x":[1]}',
        big,
        *lines,
    ]:
        noisy.feed(line)
    out = noisy.outcome(code)
    assert out.success and out.line_count == len(lines) + 4
    assert out.result == reader.outcome(code).result


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_never_raise(lines: list[bytes]) -> None:
    reader = StreamJsonReader()
    for line in lines:
        reader.feed(line)
    out = reader.outcome(1)
    assert out.line_count == len(lines) and out.cause in CAUSES
