"""The projector: batches, checkpoint in the same transaction, gaps, foreign messages."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import events as ev
from projections import GapError, Projection

ORIGIN = ev.Origin(node_id="n", correlation_id="c", actor="user:t")


class Log:
    """An in-memory sequence of stored messages, numbered like a stream."""

    def __init__(self) -> None:
        self.raws: list[ev.RawEvent] = []

    def add(self, event: ev.Event, aggregate_id: str) -> ev.Envelope:
        env = ev.envelop(event, aggregate_id, ORIGIN)
        self.raws.append(ev.RawEvent(len(self.raws) + 1, env.subject, ev.encode(env)))
        return env

    def add_raw(self, subject: str, data: bytes) -> None:
        self.raws.append(ev.RawEvent(len(self.raws) + 1, subject, data))


def _one_task_lifecycle(log: Log) -> str:
    log.add(ev.ListCreated(name="l", dir="/repo"), "l1")
    log.add(
        ev.TaskCreated(list_id="l1", title="t", subtasks=(ev.Subtask(subtask_id="s1", title="a"),)),
        "t1",
    )
    log.add(ev.TaskQueued(), "t1")
    log.add(ev.TaskClaimed(node_id="n", slot=0), "t1")
    log.add(ev.TaskStarted(node_id="n", slot=0, workdir="/w"), "t1")
    log.add(
        ev.WorktreeCreated(path="/w", branch="claudedo/t1", base_branch="main", base_commit="abc"),
        "t1",
    )
    log.add(ev.RunStarted(run_number=1, node_id="n", slot=0, workdir="/w", prompt="t"), "t1")
    log.add(ev.RunSessionOpened(run_number=1, session_id="sess", cli_version="2.1.197"), "t1")
    log.add(
        ev.RunFinished(
            run_number=1,
            success=True,
            result="ok",
            tokens_in=10,
            tokens_out=5,
            cost_usd=0.01,
            turn_count=2,
            line_count=9,
        ),
        "t1",
    )
    log.add(
        ev.WorktreeCommitted(
            run_number=1, commit="def", files_changed=2, insertions=3, deletions=1
        ),
        "t1",
    )
    log.add(ev.TaskCompleted(result="ok"), "t1")
    return "t1"


def test_a_batch_projects_tasks_runs_worktrees_and_events(tmp_path: Path) -> None:
    log = Log()
    _one_task_lifecycle(log)
    p = Projection(tmp_path / "p.duckdb")
    assert p.apply(log.raws) == len(log.raws)
    con = p.con
    assert con.execute("SELECT status, result, run_count FROM tasks").fetchall() == [
        ("done", "ok", 1)
    ]
    assert con.execute(
        "SELECT session_id, cli_version, tokens_in, cost_usd, success FROM runs"
    ).fetchall() == [("sess", "2.1.197", 10, 0.01, True)]
    assert con.execute("SELECT status, head_commit, files_changed FROM worktrees").fetchall() == [
        ("active", "def", 2)
    ]
    assert con.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone() == (11, 1, 11)
    assert con.execute(
        "SELECT count(*) FROM events WHERE task_id = 't1' AND list_id = 'l1'"
    ).fetchone() == (10,)
    assert con.execute("SELECT seq FROM projection_checkpoint").fetchone() == (11,)


def test_applying_the_same_batch_twice_changes_nothing(tmp_path: Path) -> None:
    log = Log()
    _one_task_lifecycle(log)
    p = Projection(tmp_path / "p.duckdb")
    p.apply(log.raws[:5])
    p.apply(log.raws)  # overlaps the first batch: the old part is skipped
    p.apply(log.raws)
    assert p.con.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (11, 11)


def test_a_batch_after_a_gap_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    log = Log()
    _one_task_lifecycle(log)
    p = Projection(tmp_path / "p.duckdb")
    p.apply(log.raws[:3])
    with pytest.raises(GapError):
        p.apply(log.raws[4:])
    assert p.checkpoint == 3
    assert p.con.execute("SELECT max(seq) FROM events").fetchone() == (3,)


def test_the_checkpoint_never_moves_past_an_unapplied_event(tmp_path: Path) -> None:
    log = Log()
    _one_task_lifecycle(log)
    path = tmp_path / "p.duckdb"
    p = Projection(path)
    p.apply(log.raws[:4])
    # A real failure in the middle of the next batch's transaction: the runs table is gone.
    p.con.execute("DROP TABLE runs")
    with pytest.raises(Exception, match="runs"):
        p.apply(log.raws[4:])
    assert p.checkpoint == 4
    assert p.con.execute("SELECT seq FROM projection_checkpoint").fetchone() == (4,)
    assert p.con.execute("SELECT status FROM tasks").fetchall() == [("claimed",)]
    assert p.con.execute("SELECT max(seq) FROM events").fetchone() == (4,)
    p.close()
    # Reopened (the table comes back), the same events apply exactly once.
    p = Projection(path)
    assert p.checkpoint == 4
    p.apply(log.raws)
    assert p.con.execute("SELECT status FROM tasks").fetchall() == [("done",)]
    assert p.con.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (11, 11)


def test_foreign_messages_are_skipped_and_recorded(tmp_path: Path) -> None:
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    log.add_raw("claudedo.evt.task.x.Bogus", b"garbage")
    log.add_raw("claudedo.evt.task.x.TaskQueued", b'{"hello": 1}')
    env = ev.envelop(ev.TaskQueued(), "t9", ORIGIN)
    log.add_raw("claudedo.evt.task.other.TaskQueued", ev.encode(env))  # subject lies
    log.add(ev.TaskQueued(), "never-created")  # an event for a task that does not exist
    log.add(ev.TaskCreated(list_id="l1", title="t"), "t1")
    p = Projection(tmp_path / "p.duckdb")
    assert p.apply(log.raws) == 6
    skipped = p.con.execute("SELECT seq FROM skipped_messages ORDER BY seq").fetchall()
    assert [s for (s,) in skipped] == [2, 3, 4, 5]
    assert p.con.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


@pytest.mark.parametrize("bulk", [False, True])
def test_a_tasks_last_sequence_counts_its_skipped_messages(tmp_path: Path, bulk: bool) -> None:
    from projections.queries import task_last_seq

    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    log.add(ev.TaskCreated(list_id="l1", title="t"), "t1")
    log.add(ev.TaskCreated(list_id="l1", title="u"), "t2")
    log.add_raw("claudedo.evt.task.t1.TaskQueued", b"{}")  # seq 4, skipped
    log.add(ev.TaskQueued(), "t2")  # seq 5
    p = Projection(tmp_path / "p.duckdb", bulk=bulk)
    p.apply(log.raws)
    p.finish()

    def last_seqs(projection: Projection) -> tuple[int, int, int]:
        t1, t2 = projection.task_state("t1"), projection.task_state("t2")
        assert t1 is not None and t2 is not None
        return t1.last_seq, task_last_seq(projection, t1), task_last_seq(projection, t2)

    assert last_seqs(p) == (2, 4, 5)
    p.close()
    assert last_seqs(Projection(tmp_path / "p.duckdb")) == (2, 4, 5)  # after a restart


def test_an_event_stored_twice_is_applied_once(tmp_path: Path) -> None:
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    log.add(ev.TaskCreated(list_id="l1", title="t"), "t1")
    sub = log.add(ev.SubtaskAdded(subtask_id="s", title="a"), "t1")
    # The same event again (published after the server's duplicate window): same event id.
    log.add_raw(sub.subject, ev.encode(sub))
    p = Projection(tmp_path / "p.duckdb")
    p.apply(log.raws[:3])
    p.apply(log.raws[3:])
    assert p.con.execute("SELECT count(*) FROM subtasks").fetchone() == (1,)
    assert p.con.execute("SELECT count(*) FROM skipped_messages").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["live, one batch", "live, event by event", "bulk"])
def test_an_event_id_counts_as_seen_only_once_its_event_is_applied(
    tmp_path: Path, mode: str
) -> None:
    """A message the fold rejected (its task did not exist yet), stored again later when it
    fits, is applied: a live projection and a rebuild agree, however the log is batched."""
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    early = log.add(ev.SubtaskAdded(subtask_id="s", title="a"), "t1")  # seq 2: no task t1 yet
    log.add(ev.TaskCreated(list_id="l1", title="t"), "t1")
    log.add_raw(early.subject, ev.encode(early))  # seq 4: the same event id, now it fits
    p = Projection(tmp_path / "p.duckdb", bulk=mode == "bulk")
    for batch in [[raw] for raw in log.raws] if mode == "live, event by event" else [log.raws]:
        p.apply(batch)
    p.finish()
    assert p.con.execute("SELECT subtask_id FROM subtasks").fetchall() == [("s",)]
    assert p.con.execute("SELECT seq FROM events WHERE type = 'SubtaskAdded'").fetchall() == [(4,)]
    assert p.con.execute("SELECT seq, reason FROM skipped_messages").fetchall() == [
        (2, "SubtaskAdded for unknown task t1")
    ]


def test_duplicates_are_found_whatever_the_order_of_event_ids(tmp_path: Path) -> None:
    """Ids above every applied one are fresh without a lookup; an older id (another node's
    clock behind, an old message published again) is looked up, also after a restart."""
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    log.add(ev.TaskCreated(list_id="l1", title="t"), "t1")
    old = log.add(ev.SubtaskAdded(subtask_id="s1", title="a"), "t1")
    late = ev.envelop(ev.SubtaskAdded(subtask_id="s2", title="b"), "t1", ORIGIN)
    late = msgspec.structs.replace(late, event_id="0" * 8 + old.event_id[8:])  # older, yet new
    assert late.event_id < old.event_id
    for _ in range(3):
        log.add(ev.TaskEdited(description="x"), "t1")
    p = Projection(tmp_path / "p.duckdb")
    p.apply(log.raws)
    log.add_raw(old.subject, ev.encode(old))  # applied already, five events ago
    log.add_raw(late.subject, ev.encode(late))
    assert p.apply(log.raws[-2:]) == len(log.raws)
    assert p.con.execute("SELECT subtask_id FROM subtasks ORDER BY 1").fetchall() == [
        ("s1",),
        ("s2",),
    ]
    p.close()
    restarted = Projection(tmp_path / "p.duckdb")
    log.add_raw(late.subject, ev.encode(late))
    restarted.apply(log.raws[-1:])
    assert restarted.con.execute("SELECT count(*) FROM subtasks").fetchone() == (2,)
    assert restarted.con.execute("SELECT reason FROM skipped_messages ORDER BY seq").fetchall() == [
        (f"duplicate event id {old.event_id}",),
        (f"duplicate event id {late.event_id}",),
    ]


def test_state_read_back_from_rows_equals_the_folded_state(tmp_path: Path) -> None:
    log = Log()
    _one_task_lifecycle(log)
    path = tmp_path / "p.duckdb"
    p = Projection(path)
    p.apply(log.raws)
    folded = p.task_state("t1")
    p.close()
    fresh = Projection(path)  # empty cache: the state comes from the rows
    assert fresh.task_state("t1") == folded
    assert msgspec.structs.asdict(fresh.list_state("l1"))["name"] == "l"  # type: ignore[arg-type]


def test_a_second_creation_of_a_task_replaces_its_rows_without_duplicates(tmp_path: Path) -> None:
    # Commands never do this (creation is guarded), but an unguarded writer could.
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    sub = (ev.Subtask(subtask_id="s1", title="a"),)
    log.add(ev.TaskCreated(list_id="l1", title="first", subtasks=sub), "t1")
    log.add(ev.TaskCreated(list_id="l1", title="second", subtasks=sub), "t1")
    live = Projection(tmp_path / "live.duckdb")
    for raw in log.raws:
        live.apply([raw])
    assert live.con.execute("SELECT title FROM tasks").fetchall() == [("second",)]
    assert live.con.execute("SELECT count(*) FROM subtasks").fetchone() == (1,)
    one_batch = Projection(tmp_path / "one.duckdb")
    one_batch.apply(log.raws)
    assert one_batch.con.execute("SELECT title FROM tasks").fetchall() == [("second",)]
    assert one_batch.con.execute("SELECT count(*) FROM subtasks").fetchone() == (1,)
    # The first creation no longer cached (a restart, or evicted): its rows are still found.
    uncached = Projection(tmp_path / "uncached.duckdb")
    uncached.apply(log.raws[:2])
    uncached.drop_cache()
    uncached.apply(log.raws[2:])
    assert uncached.con.execute("SELECT title FROM tasks").fetchall() == [("second",)]
    assert uncached.con.execute("SELECT count(*) FROM subtasks").fetchone() == (1,)


def test_an_event_whose_row_cannot_be_stored_is_skipped_and_recorded(tmp_path: Path) -> None:
    # A real DuckDB refusal: this file's tasks table rejects one title.
    import duckdb

    path = tmp_path / "p.duckdb"
    schema = duckdb.connect(str(path))
    from projections.store import schema_sql

    ddl = schema_sql()[0].replace(
        ");\n\nCREATE TABLE IF NOT EXISTS subtasks",
        ",\n    CHECK (title <> 'poison')\n);\n\nCREATE TABLE IF NOT EXISTS subtasks",
    )
    assert "poison" in ddl
    schema.execute(ddl)
    schema.close()
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    log.add(ev.TaskCreated(list_id="l1", title="fine"), "t1")
    log.add(ev.TaskCreated(list_id="l1", title="poison"), "t2")
    log.add(ev.TaskQueued(), "t1")
    p = Projection(path)
    assert p.apply(log.raws) == 4
    assert p.con.execute("SELECT id, status FROM tasks").fetchall() == [("t1", "queued")]
    skipped = p.con.execute("SELECT seq, reason FROM skipped_messages").fetchall()
    assert [s for s, _ in skipped] == [3] and "Constraint" in skipped[0][1]
    assert p.con.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_values_outside_storable_ranges_are_refused_at_decode(tmp_path: Path) -> None:
    log = Log()
    log.add(ev.ListCreated(name="l"), "l1")
    env = ev.envelop(ev.TaskCreated(list_id="l1", title="big"), "t1", ORIGIN)
    data = ev.encode(env).replace(b'"max_turns":null', b'"max_turns":99999999999999999999')
    log.add_raw(env.subject, data)
    late = ev.encode(ev.envelop(ev.TaskCreated(list_id="l1", title="t"), "t2", ORIGIN))
    naive = late.replace(
        late[late.index(b'"occurred_at":"') + 15 :].split(b'"')[0], b"2024-01-01T00:00:00"
    )
    log.add_raw("claudedo.evt.task.t2.TaskCreated", naive)
    p = Projection(tmp_path / "p.duckdb")
    assert p.apply(log.raws) == 3
    assert p.con.execute("SELECT seq FROM skipped_messages ORDER BY seq").fetchall() == [(2,), (3,)]


@pytest.mark.parametrize("n", [1, 64, 65, 500])
def test_an_id_match_finds_the_same_rows_as_a_filter_or_a_join(tmp_path: Path, n: int) -> None:
    from projections.store import in_ids, open_db

    con = open_db(tmp_path / "ids.duckdb")
    con.execute("CREATE TABLE t AS SELECT 'id-' || range AS id FROM range(1000)")
    wanted = [f"id-{i * 2}" for i in range(n)] + ["missing"]
    rows = con.execute(f"SELECT id FROM t WHERE {in_ids('id', len(wanted))}", [wanted]).fetchall()
    assert sorted(r[0] for r in rows) == sorted(w for w in wanted if w != "missing")


def test_the_writer_reopens_its_connection_and_goes_on_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is reopened every so many events (it bounds DuckDB's memory); the
    rows, the checkpoint and the cached states carry on as if it had not been."""
    monkeypatch.setattr("projections.projector._REOPEN_EVENTS", 5)
    monkeypatch.setattr("projections.projector._REOPEN_MIN_S", 0.0)
    log = Log()
    _one_task_lifecycle(log)
    p = Projection(tmp_path / "p.duckdb")
    connections = [p.con]  # kept, so that no two are ever the same object
    for raw in log.raws:
        assert p.apply([raw]) == raw.seq
        if p.con is not connections[-1]:
            connections.append(p.con)
        assert p.con.execute("SELECT seq FROM projection_checkpoint").fetchone() == (raw.seq,)
    assert len(connections) == 3  # reopened after events 5 and 10 of 11
    assert p.con.execute("SELECT status, run_count FROM tasks").fetchall() == [("done", 1)]
    assert p.con.execute("SELECT count(*) FROM events").fetchone() == (len(log.raws),)
    p.close()
    fresh = Projection(tmp_path / "fresh.duckdb")
    fresh.apply(log.raws)
    reopened = Projection(tmp_path / "p.duckdb")
    for table in ("tasks", "runs", "worktrees", "subtasks"):
        query = f"SELECT * FROM {table}"
        assert reopened.con.execute(query).fetchall() == fresh.con.execute(query).fetchall()


# One value for each agent setting, none of them a default.
_SETTINGS = {
    "model": "claude-sonnet-4-6",
    "system_prompt": "Be brief.",
    "agent_path": "/agents/reviewer.md",
    "permission_mode": "acceptEdits",
    "allowed_tools": ("Bash", "Edit"),
    "max_budget_usd": 1.5,
    "max_turns": 7,
    "timeout_s": 90.0,
}


def test_created_lists_and_tasks_carry_every_agent_setting() -> None:
    from projections.state import fold_list, fold_task

    # A new setting must be given a value here, and carried by both creations' folds.
    assert set(_SETTINGS) == set(ev.AGENT_SETTINGS)
    lst = ev.envelop(ev.ListCreated(name="l", **_SETTINGS), "l1", ORIGIN)  # type: ignore[arg-type]
    task = ev.envelop(ev.TaskCreated(list_id="l1", title="t", **_SETTINGS), "t1", ORIGIN)  # type: ignore[arg-type]
    for state in (fold_list(None, lst, 1), fold_task(None, task, 2)):
        assert {n: getattr(state, n) for n in _SETTINGS} == _SETTINGS


def test_projection_file_of_an_older_format_is_dropped_to_be_built_again(tmp_path: Path) -> None:
    from projections import store

    path = tmp_path / "old.duckdb"
    con = store.open_db(path)
    con.execute("DROP TABLE projection_format")  # what a file of format 1 looks like
    con.close()
    assert store.format_of(path) == 1
    assert store.drop_if_out_of_date(path) == 1
    assert not path.exists()
    store.open_db(path).close()
    assert store.format_of(path) == store.FORMAT_VERSION
    assert store.drop_if_out_of_date(path) is None
    assert path.exists()
