"""Logs written by earlier versions (tests/fixtures/logs/<name>/, made by make_log.py and
never rewritten) still verify, and replay into the same facts: rebuilt in bulk, applied batch
by batch, and projected by a real node reading them from NATS. A version that cannot read an
old log fails here, before any user's log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claudedo_actors.audit.commands import verify_export
from claudedo_actors.audit.export import ExportSource
from events.log import EventLog
from tests.conftest import JetStreamEnv, NodeProcess, wait_until
from tests.fixture_logs import FIXTURES, QUERIES, facts, project

LOGS = sorted(p for p in FIXTURES.iterdir() if (p / "MANIFEST.json").exists())


def _expected(log: Path) -> dict[str, Any]:
    return dict(json.loads((log / "expected.json").read_text()))


def _json(value: Any) -> Any:
    """As the expected file holds it."""
    return json.loads(json.dumps(value, sort_keys=True))


def test_there_is_a_fixture_log_of_todays_schema() -> None:
    assert LOGS, "no fixture log in tests/fixtures/logs"


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_a_fixture_log_still_verifies(log: Path) -> None:
    report = verify_export(log, None, log / "keys")
    assert report.ok, [d.line() for d in report.discrepancies]
    assert report.result.checkpoints and report.result.unchained == 0
    assert report.transcripts_checked == len(report.result.runs)


@pytest.mark.parametrize("bulk", [True, False], ids=["rebuilt", "applied"])
@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_a_fixture_log_replays_into_the_same_facts(log: Path, tmp_path: Path, bulk: bool) -> None:
    p = project(ExportSource(log).batches(), tmp_path / "p.duckdb", bulk=bulk)
    try:
        assert _json(facts(p)) == _expected(log)
    finally:
        p.close()


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_a_node_projects_a_fixture_log_from_nats_into_the_same_facts(
    log: Path, tmp_path: Path, jsenv: JetStreamEnv
) -> None:
    messages = [raw for batch in ExportSource(log).batches() for raw in batch]

    async def load() -> None:
        await EventLog(jsenv.js).ensure_stream()
        for raw in messages:
            await jsenv.js.publish(raw.subject, raw.data)

    jsenv.run(load())
    node = NodeProcess(tmp_path / "home", ["--nats", jsenv.url]).start()
    try:
        last = messages[-1].seq
        wait_until(lambda: node.ok("info")["checkpoint_seq"] >= last, 60, "the node's projection")
        got = {name: node.ok("sql", sql) for name, sql in QUERIES.items()}
        expected = _expected(log)
        # A checkpoint the node signed meanwhile is its own, not the fixture's.
        got["events"] = [r for r in got["events"] if r["type"] != "LogCheckpointed"]
        expected["events"] = [r for r in expected["events"] if r["type"] != "LogCheckpointed"]
        assert _json(got) == expected
    finally:
        node.stop()
