"""Time travel: `tasks`, `task show` and `sql` with `--as-of SEQ|TIME` answer exactly what
they answered at that moment, from snapshots of the projection plus a replay of the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claudedo_actors.audit.export import ExportSource
from events.log import RawEvent
from projections import Projection
from projections import queries as q
from projections.snapshots import Snapshots
from tests.conftest import NodeProcess
from tests.fixture_logs import FIXTURES, facts, project

SQL = "select status, count(*) as n from tasks group by 1 order by 1"


class Moment:
    def __init__(self, seq: int, tasks: Any, shown: Any, counted: Any) -> None:
        self.seq, self.tasks, self.shown, self.counted = seq, tasks, shown, counted


def _now(node: NodeProcess, task: str) -> Moment:
    seq = node.ok("info")["last_seq"]
    return Moment(seq, node.ok("tasks"), node.ok("task", "show", task), node.ok("sql", SQL))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, list[Any]]]:
    """A node that keeps a snapshot every 4 events, and what it answered after each step."""
    home = tmp_path_factory.mktemp("as-of") / "home"
    node = NodeProcess(home, env={"CLAUDEDO_SNAPSHOT_EVERY": "4"}).start()
    try:
        node.ok("list", "add", "demo")
        a = node.ok("task", "add", "demo", "A", "--subtask", "one")["id"]
        moments = [_now(node, a)]
        steps = [
            ("task", "add", "demo", "B", "--queue"),
            ("task", "edit", a, "--title", "A, renamed", "--max-turns", "3"),
            ("task", "subtask", "done", a, "1"),
            ("task", "queue", a),
            ("task", "unqueue", a),
            ("task", "add", "demo", "C"),
            ("task", "cancel", a),
        ]
        for step in steps:
            node.ok(*step)
            moments.append(_now(node, a))
        yield node, moments
    finally:
        node.stop()


def test_every_past_moment_is_answered_as_it_was_then(
    history: tuple[NodeProcess, list[Moment]],
) -> None:
    node, moments = history
    assert len({m.seq for m in moments}) == len(moments)
    task = moments[0].shown["id"]
    for m in moments:
        at = str(m.seq)
        assert node.ok("tasks", "--as-of", at) == m.tasks, m.seq
        assert node.ok("task", "show", task[:8], "--as-of", at) == m.shown, m.seq
        assert node.ok("sql", SQL, "--as-of", at) == m.counted, m.seq
    assert list((node.home / "snapshots").rglob("*.duckdb")), "no snapshot was taken"


def test_a_time_is_the_state_after_the_last_event_before_it(
    history: tuple[NodeProcess, list[Moment]],
) -> None:
    node, moments = history
    task = moments[0].shown["id"]
    events = node.ok("audit", task)
    for m in moments[1:]:
        mine = [e for e in events if e["seq"] <= m.seq]
        if not mine or mine[-1]["seq"] != m.seq:
            continue  # the step changed another task
        when = mine[-1]["occurred_at"]
        assert node.ok("task", "show", task, "--as-of", when) == m.shown, when
    before = node.ok("tasks", "--as-of", "2001-01-01")
    assert before == []
    human = node.cli("tasks", "--as-of", "0")
    assert human.code == 0 and human.out.strip() == "no tasks"


def test_the_human_views_take_as_of_too(history: tuple[NodeProcess, list[Moment]]) -> None:
    node, moments = history
    first = moments[0]
    shown = node.cli("tasks", "--as-of", str(first.seq))
    assert shown.code == 0 and "A" in shown.out and "B" not in shown.out.split()


def test_bad_moments_are_refused_in_one_line(history: tuple[NodeProcess, list[Moment]]) -> None:
    node, moments = history
    last = node.ok("info")["last_seq"]
    for args, says in (
        (("tasks", "--as-of", str(last + 100)), f"the log holds {last} events"),
        (("tasks", "--as-of", "yesterday"), "not an ISO 8601 time"),
        (("task", "show", "zzzz", "--as-of", "1"), "not found"),
        (("sql", "delete from tasks", "--as-of", "2"), "only read-only queries"),
        (("sql", "select * from read_csv('/etc/passwd')", "--as-of", "2"), "SQL error"),
        (("sql", "explain analyze copy (select 1) to 'x.csv'", "--as-of", "2"), "read-only"),
        (("tasks", "--as-of", "²"), "not an ISO 8601 time"),
    ):
        res = node.cli(*args)
        assert res.code != 0 and says in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) == 1, res.err
    # Nothing was changed by any of it.
    assert node.ok("tasks") == moments[-1].tasks


def test_as_of_still_answers_after_a_rebuild(history: tuple[NodeProcess, list[Moment]]) -> None:
    node, moments = history
    node.ok("projections", "rebuild")
    m = moments[3]
    assert node.ok("tasks", "--as-of", str(m.seq)) == m.tasks


# --- snapshots, without a node -------------------------------------------------------------


def _fixture_log() -> list[RawEvent]:
    log = sorted(p for p in FIXTURES.iterdir() if (p / "MANIFEST.json").exists())[0]
    return [raw for batch in ExportSource(log).batches() for raw in batch]


@pytest.mark.parametrize("every", [1, 7, 1000])
def test_a_state_built_from_snapshots_equals_one_replayed_from_the_start(
    tmp_path: Path, every: int
) -> None:
    log = _fixture_log()

    def read(first: int, last: int) -> Iterator[list[RawEvent]]:
        yield [raw for raw in log if first <= raw.seq <= last]

    snapshots = Snapshots(tmp_path / "snapshots", every)
    live = Projection(tmp_path / "live.duckdb", allowed=(snapshots.folder,))
    try:
        # Snapshots as the projector takes them: after a batch that crosses a multiple.
        for i in range(0, len(log), 5):
            before = live.checkpoint
            after = live.apply(log[i : i + 5])
            if snapshots.due(before, after):
                snapshots.take(live.con, after)
    finally:
        live.close()
    assert snapshots.seqs() or every > len(log)
    for seq in sorted({1, 9, 23, len(log) // 2, len(log) - 1, len(log)}):
        built = snapshots.build(seq, read, tmp_path / f"at-{seq}.duckdb")
        p = Projection(built)
        whole = project([log[:seq]], tmp_path / f"whole-{seq}.duckdb")
        try:
            got, want = facts(p), facts(whole)
            got.pop("events"), want.pop("events")  # a built state holds only the replayed tail
            assert got == want, seq
        finally:
            p.close()
            whole.close()


def test_a_duplicate_the_live_projection_skipped_is_skipped_in_a_past_state_too(
    tmp_path: Path,
) -> None:
    # An event published again after the duplicate window is stored twice; the projection
    # skips the second copy by its event id. A past state built from a snapshot taken after
    # the first copy does not know that id, so it is told which sequences were skipped.
    log = _fixture_log()
    first = next(r for r in log if r.subject.endswith(".SubtaskAdded"))  # folds again if new
    log.append(RawEvent(len(log) + 1, first.subject, first.data))

    def read(start: int, last: int) -> Iterator[list[RawEvent]]:
        yield [raw for raw in log if start <= raw.seq <= last]

    snapshots = Snapshots(tmp_path / "snapshots", len(log) - 3)
    live = Projection(tmp_path / "live.duckdb", allowed=(snapshots.folder,))
    try:
        live.apply(log[: len(log) - 2])
        snapshots.take(live.con, live.checkpoint)
        live.apply(log[len(log) - 2 :])
        skipped = q.skipped_seqs(live, len(log))
        assert skipped == {len(log)}
        want = facts(live)
    finally:
        live.close()
    built = snapshots.build(len(log), read, tmp_path / "at.duckdb", skipped)
    p = Projection(built)
    try:
        got = facts(p)
        for name in ("events", "skipped"):
            got.pop(name), want.pop(name)
        assert got == want
    finally:
        p.close()
