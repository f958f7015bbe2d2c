"""Analytics: the run views' figures from a known history, `stats`, `sql` on the views, and
`export --parquet` read back, through a real node, NATS and DuckDB."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow.parquet as pq
import pytest

import events as ev
from projections import Projection
from tests.api_support import Api, assert_refused
from tests.bulk_support import ORIGIN, publish, wait_for_projection
from tests.conftest import NodeProcess

DAY1 = datetime(2026, 3, 1, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, tzinfo=UTC)
OPUS, SONNET = "claude-opus-4-1", "claude-sonnet-4-6"
TOKENS = {"tokens_in": 1000, "tokens_out": 100, "cache_read_tokens": 10, "cache_creation_tokens": 1}


class History:
    """Events of a made-up past, each at the time it names, as the node's log would hold them."""

    def __init__(self) -> None:
        self.envelopes: list[ev.Envelope] = []
        self.ids: dict[str, str] = {}

    def add(self, key: str, at: datetime, *events: ev.Event) -> None:
        agg = self.ids.setdefault(key, ev.new_aggregate_id())
        for i, e in enumerate(events):
            env = ev.envelop(e, agg, ORIGIN)
            when = at + timedelta(microseconds=i)  # distinct, in order
            self.envelopes.append(msgspec.structs.replace(env, occurred_at=when))

    def queued_run(
        self, task: str, queued: datetime, wait_s: float, number: int = 1, **run: Any
    ) -> datetime:
        """The task queued at `queued`, claimed, and run `number` started `wait_s` later."""
        started = queued + timedelta(seconds=wait_s)
        follow_up = run.pop("follow_up", None)
        self.add(task, queued, ev.TaskQueued(follow_up_prompt=follow_up))
        self.add(task, queued + timedelta(milliseconds=100), ev.TaskClaimed(node_id="n1", slot=0))
        self.add(task, started - timedelta(milliseconds=1),
                 ev.TaskStarted(node_id="n1", slot=0, workdir="/w"))  # fmt: skip
        return self.run(task, started, number, **run)

    def run(
        self, task: str, started: datetime, number: int, *, model: str, seconds: float,
        cause: str | None = None, cost: float, tokens: bool = True, **flags: bool,
    ) -> datetime:  # fmt: skip
        """Run `number` from `started`, `seconds` long; success unless it has a cause."""
        at = {"run_number": number, "node_id": "n1", "slot": 0, "workdir": "/w"}
        opened = ev.RunSessionOpened(run_number=number, session_id=f"s-{task}", model=model)
        self.add(task, started, ev.RunStarted(**at, prompt="p", model=model, **flags), opened)
        ended = started + timedelta(seconds=seconds)
        counts = TOKENS if tokens else {}
        finished = ev.RunFinished(
            run_number=number, success=cause is None, cause=cause, cost_usd=cost, **counts
        )
        self.add(task, ended, finished)
        return ended + timedelta(milliseconds=10)


def _history() -> History:
    """Five tasks on two lists over two days (the figures the tests expect are worked out
    from these in their comments):

    - T1 alpha, opus, day 1: waits 2 s, succeeds in 60 s, $0.10, no token counts.
    - T2 alpha, sonnet, day 1: waits 4 s, fails in 30 s (rate_limited, $0.05); the retry
      succeeds in 60 s ($0.20).
    - T3 beta, sonnet: day 1 waits 1 s, succeeds in 10 s ($0.01); continued on day 2: waits
      3 s, succeeds in 20 s ($0.02).
    - T4 beta, sonnet, day 2: waits 5 s, fails in 40 s (max_turns, $0.03).
    - T5 alpha, opus, day 2: waits 10 s, cancelled after 20 s ($0.04).
    """
    h = History()
    h.add("alpha", DAY1, ev.ListCreated(name="alpha"))
    h.add("beta", DAY1, ev.ListCreated(name="beta"))
    for key, lst in (("T1", "alpha"), ("T2", "alpha"), ("T3", "beta"), ("T4", "beta"),
                     ("T5", "alpha")):  # fmt: skip
        h.add(key, DAY1, ev.TaskCreated(list_id=h.ids[lst], title=key))

    at = DAY1 + timedelta(hours=10)
    end = h.queued_run("T1", at, 2, model=OPUS, seconds=60, cost=0.10, tokens=False)
    h.add("T1", end, ev.TaskCompleted(result="ok"))

    at = DAY1 + timedelta(hours=11)
    end = h.queued_run("T2", at, 4, model=SONNET, seconds=30, cost=0.05, cause="rate_limited")
    end = h.run("T2", end, 2, model=SONNET, seconds=60, cost=0.20, is_retry=True)
    h.add("T2", end, ev.TaskCompleted(result="ok"))

    at = DAY1 + timedelta(hours=12)
    end = h.queued_run("T3", at, 1, model=SONNET, seconds=10, cost=0.01)
    h.add("T3", end, ev.TaskCompleted(result="ok"))
    at = DAY2 + timedelta(hours=9)
    end = h.queued_run("T3", at, 3, 2, model=SONNET, seconds=20, cost=0.02, is_continue=True,
                       follow_up="more")  # fmt: skip
    h.add("T3", end, ev.TaskCompleted(result="ok"))

    at = DAY2 + timedelta(hours=10)
    end = h.queued_run("T4", at, 5, model=SONNET, seconds=40, cost=0.03, cause="max_turns")
    h.add("T4", end, ev.TaskFailed(error="too many turns", cause="max_turns"))

    at = DAY2 + timedelta(hours=13)
    end = h.queued_run("T5", at, 10, model=OPUS, seconds=20, cost=0.04, cause="cancelled")
    h.add("T5", end, ev.TaskCancelled())
    return h


@pytest.fixture(scope="module")
def history_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the module (no slots) whose log holds `_history()`."""
    node = NodeProcess(tmp_path_factory.mktemp("analytics") / "home").start()
    publish(node, _history().envelopes)
    wait_for_projection(node)
    yield node
    node.stop()


def _row(**figures: Any) -> dict[str, Any]:
    """A stats row as the views give it; `cost_usd`, the rate and the quantiles approximately."""
    approximate = ("cost_usd", "cost_per_done_task_usd", "success_rate", "p50_duration_ms",
                   "p95_duration_ms", "p50_queue_wait_ms", "p95_queue_wait_ms")  # fmt: skip
    for name in approximate:
        if figures.get(name) is not None:
            figures[name] = pytest.approx(figures[name])
    return figures


def _tokens(runs_with_counts: int) -> dict[str, int]:
    return {name: n * runs_with_counts for name, n in TOKENS.items()}


# By model. opus: T1 (60 s, waited 2 s) and T5 (20 s, cancelled, waited 10 s). sonnet: T2's
# two runs (30 s after 4 s; the retry, 60 s, did not wait), T3's two (10 s after 1 s; the
# continue, 20 s after 3 s) and T4's (40 s after 5 s). Quantiles interpolate: the p95 of
# 20 and 60 s is 20 + 0.95 * 40 = 58 s.
BY_MODEL = [
    _row(model=OPUS, runs=2, finished_runs=2, succeeded_runs=1, failed_runs=1, success_rate=0.5,
         retries=0, continues=0, failure_causes={"cancelled": 1}, **_tokens(1), cost_usd=0.14,
         tasks=2, done_tasks=1, cost_per_done_task_usd=0.14, p50_duration_ms=40_000,
         p95_duration_ms=58_000, p50_queue_wait_ms=6_000, p95_queue_wait_ms=9_600),
    _row(model=SONNET, runs=5, finished_runs=5, succeeded_runs=3, failed_runs=2,
         success_rate=0.6, retries=1, continues=1,
         failure_causes={"max_turns": 1, "rate_limited": 1}, **_tokens(5), cost_usd=0.31,
         tasks=3, done_tasks=2, cost_per_done_task_usd=0.155, p50_duration_ms=30_000,
         p95_duration_ms=56_000, p50_queue_wait_ms=3_500, p95_queue_wait_ms=4_850),
]  # fmt: skip


def _by_list(ids: dict[str, str]) -> list[dict[str, Any]]:
    # alpha: T1, T2 (two runs), T5; beta: T3 (two runs), T4.
    return [
        _row(list_id=ids["alpha"], list_name="alpha", runs=4, finished_runs=4, succeeded_runs=2,
             failed_runs=2, success_rate=0.5, retries=1, continues=0,
             failure_causes={"cancelled": 1, "rate_limited": 1}, **_tokens(3), cost_usd=0.39,
             tasks=3, done_tasks=2, cost_per_done_task_usd=0.195, p50_duration_ms=45_000,
             p95_duration_ms=60_000, p50_queue_wait_ms=4_000, p95_queue_wait_ms=9_400),
        _row(list_id=ids["beta"], list_name="beta", runs=3, finished_runs=3, succeeded_runs=2,
             failed_runs=1, success_rate=2 / 3, retries=0, continues=1,
             failure_causes={"max_turns": 1}, **_tokens(3), cost_usd=0.06, tasks=2,
             done_tasks=1, cost_per_done_task_usd=0.06, p50_duration_ms=20_000,
             p95_duration_ms=38_000, p50_queue_wait_ms=3_000, p95_queue_wait_ms=4_800),
    ]  # fmt: skip


# Day 1: T1, T2's two runs, T3's first; day 2: T3's continue, T4, T5. T3 is done, so it counts
# as a done task on both days.
BY_DAY = [
    _row(day="2026-03-01", runs=4, finished_runs=4, succeeded_runs=3, failed_runs=1,
         success_rate=0.75, retries=1, continues=0, failure_causes={"rate_limited": 1},
         **_tokens(3), cost_usd=0.36, tasks=3, done_tasks=3, cost_per_done_task_usd=0.12,
         p50_duration_ms=45_000, p95_duration_ms=60_000, p50_queue_wait_ms=2_000,
         p95_queue_wait_ms=3_800),
    _row(day="2026-03-02", runs=3, finished_runs=3, succeeded_runs=1, failed_runs=2,
         success_rate=1 / 3, retries=0, continues=1,
         failure_causes={"cancelled": 1, "max_turns": 1}, **_tokens(3), cost_usd=0.09, tasks=3,
         done_tasks=1, cost_per_done_task_usd=0.09, p50_duration_ms=20_000,
         p95_duration_ms=38_000, p50_queue_wait_ms=5_000, p95_queue_wait_ms=9_500),
]  # fmt: skip

# Day 2 on: opus has only T5's cancelled run (no task done: no cost per done task); sonnet
# T3's continue and T4.
BY_MODEL_SINCE_DAY2 = [
    _row(model=OPUS, runs=1, finished_runs=1, succeeded_runs=0, failed_runs=1,
         success_rate=0.0, retries=0, continues=0, failure_causes={"cancelled": 1},
         **_tokens(1), cost_usd=0.04, tasks=1, done_tasks=0, cost_per_done_task_usd=None,
         p50_duration_ms=20_000, p95_duration_ms=20_000, p50_queue_wait_ms=10_000,
         p95_queue_wait_ms=10_000),
    _row(model=SONNET, runs=2, finished_runs=2, succeeded_runs=1, failed_runs=1,
         success_rate=0.5, retries=0, continues=1, failure_causes={"max_turns": 1},
         **_tokens(2), cost_usd=0.05, tasks=2, done_tasks=1, cost_per_done_task_usd=0.05,
         p50_duration_ms=30_000, p95_duration_ms=39_000, p50_queue_wait_ms=4_000,
         p95_queue_wait_ms=4_900),
]  # fmt: skip


def _list_ids(node: NodeProcess) -> dict[str, str]:
    return {row["name"]: row["id"] for row in node.ok("list", "ls")}


# --- the views -----------------------------------------------------------------------------


def test_stats_by_model_count_runs_failures_retries_tokens_cost_and_times(
    history_node: NodeProcess,
) -> None:
    assert history_node.ok("stats") == BY_MODEL
    assert history_node.ok("stats", "--by", "model") == BY_MODEL


def test_stats_by_list_count_every_run_of_the_lists_tasks(history_node: NodeProcess) -> None:
    assert history_node.ok("stats", "--by", "list") == _by_list(_list_ids(history_node))


def test_stats_by_day_group_runs_by_the_utc_day_they_started(history_node: NodeProcess) -> None:
    assert history_node.ok("stats", "--by", "day") == BY_DAY


def test_the_views_hold_what_stats_shows(history_node: NodeProcess) -> None:
    node = history_node
    assert node.ok("sql", "select * from run_stats_by_model") == BY_MODEL
    assert node.ok("sql", "from run_stats_by_list") == _by_list(_list_ids(node))
    assert node.ok("sql", "select * from run_stats_by_day") == BY_DAY
    since = node.ok("sql", "from run_stats_by_model_since('2026-03-02T00:00:00Z')")
    assert since == BY_MODEL_SINCE_DAY2


def test_failure_causes_count_failed_runs_by_day_list_model_and_cause(
    history_node: NodeProcess,
) -> None:
    rows = history_node.ok("sql", "select * from failure_causes")
    ids = _list_ids(history_node)
    assert rows == [
        {"day": "2026-03-01", "list_id": ids["alpha"], "list_name": "alpha", "model": SONNET,
         "cause": "rate_limited", "runs": 1},
        {"day": "2026-03-02", "list_id": ids["alpha"], "list_name": "alpha", "model": OPUS,
         "cause": "cancelled", "runs": 1},
        {"day": "2026-03-02", "list_id": ids["beta"], "list_name": "beta", "model": SONNET,
         "cause": "max_turns", "runs": 1},
    ]  # fmt: skip
    totals = history_node.ok("sql", "select cause, sum(runs) as n from failure_causes group by 1")
    assert sorted((r["cause"], r["n"]) for r in totals) == [
        ("cancelled", 1), ("max_turns", 1), ("rate_limited", 1)
    ]  # fmt: skip


def test_run_facts_give_each_run_its_queue_wait_and_wall_time(history_node: NodeProcess) -> None:
    rows = history_node.ok(
        "sql",
        "select run_number, is_retry, is_continue, queue_wait_ms, duration_ms from run_facts "
        "where list_name = 'alpha' and model = 'claude-sonnet-4-6' order by run_number",
    )
    assert rows == [
        {"run_number": 1, "is_retry": False, "is_continue": False, "queue_wait_ms": 4000,
         "duration_ms": 30_000},
        {"run_number": 2, "is_retry": True, "is_continue": False, "queue_wait_ms": None,
         "duration_ms": 60_000},
    ]  # fmt: skip


def test_the_views_are_there_after_a_rebuild(history_node: NodeProcess) -> None:
    history_node.ok("projections", "rebuild")
    assert history_node.ok("sql", "from run_stats_by_model") == BY_MODEL
    assert history_node.ok("stats", "--by", "day") == BY_DAY


# --- the fold's queue time, without a node --------------------------------------------------


def _project(tmp_path: Path, h: History) -> Projection:
    p = Projection(tmp_path / "p.duckdb")
    p.apply([ev.RawEvent(i + 1, e.subject, ev.encode(e)) for i, e in enumerate(h.envelopes)])
    return p


def test_a_run_after_a_requeue_waited_from_the_requeue(tmp_path: Path) -> None:
    """A node stopped during run 1 gives the task back; the retry that resumes it on the next
    claim waited in the queue from the requeue."""
    h = History()
    h.add("l", DAY1, ev.ListCreated(name="l"))
    h.add("t", DAY1, ev.TaskCreated(list_id=h.ids["l"], title="t"))
    end = h.queued_run("t", DAY1, 2, model=OPUS, seconds=5, cost=0.0, cause="worker_lost")
    h.add("t", end, ev.TaskRequeued(reason="the node stopped"))
    h.add("t", end + timedelta(seconds=7), ev.TaskClaimed(node_id="n2", slot=0),
          ev.TaskStarted(node_id="n2", slot=0, workdir="/w"))  # fmt: skip
    h.run("t", end + timedelta(seconds=8), 2, model=OPUS, seconds=1, cost=0.0, is_retry=True)
    p = _project(tmp_path, h)
    try:
        rows = p.con.execute(
            "SELECT run_number, queue_wait_ms FROM run_facts ORDER BY run_number"
        ).fetchall()
    finally:
        p.close()
    assert rows == [(1, 2000), (2, 8000)]


def test_a_run_still_going_counts_as_run_but_not_as_finished(tmp_path: Path) -> None:
    h = History()
    h.add("l", DAY1, ev.ListCreated(name="l"))
    h.add("t", DAY1, ev.TaskCreated(list_id=h.ids["l"], title="t"))
    h.add("t", DAY1, ev.TaskQueued(), ev.TaskClaimed(node_id="n1", slot=0),
          ev.TaskStarted(node_id="n1", slot=0, workdir="/w"),
          ev.RunStarted(run_number=1, node_id="n1", slot=0, workdir="/w", prompt="p",
                        model=OPUS))  # fmt: skip
    p = _project(tmp_path, h)
    try:
        row = p.con.execute(
            "SELECT runs, finished_runs, success_rate, cost_usd, p50_duration_ms, failure_causes "
            "FROM run_stats_by_model"
        ).fetchall()
    finally:
        p.close()
    assert row == [(1, 0, None, 0.0, None, {})]


# --- stats, the command ---------------------------------------------------------------------


def test_stats_prints_a_table_of_the_figures(history_node: NodeProcess) -> None:
    res = history_node.cli("stats")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    opus = next(line for line in lines if OPUS in line)
    sonnet = next(line for line in lines if SONNET in line)
    assert "cancelled 1" in opus and "0.1400" in opus and "40.0s/58.0s" in opus
    assert " 60 " in sonnet and "max_turns 1" in sonnet and "rate_limited 1" in sonnet
    assert "0.1550" in sonnet and "30.0s/56.0s" in sonnet
    by_list = history_node.cli("stats", "--by", "list")
    assert by_list.code == 0 and "alpha" in by_list.out and "beta" in by_list.out


def test_stats_since_counts_only_the_runs_started_from_then(history_node: NodeProcess) -> None:
    for since in ("2026-03-02", "2026-03-02T00:00:00Z", "2026-03-02T01:00:00+01:00"):
        assert history_node.ok("stats", "--since", since) == BY_MODEL_SINCE_DAY2, since
    assert history_node.ok("stats", "--since", "2026-03-03") == []
    empty = history_node.cli("stats", "--since", "2030-01-01")
    assert empty.code == 0 and "no runs" in empty.out


def test_stats_refuses_a_bad_time_or_grouping_in_one_line(history_node: NodeProcess) -> None:
    for args, says in (
        (("--since", "yesterday"), "ISO 8601"),
        (("--since", "2026-13-01"), "ISO 8601"),
        (("--since", ""), "ISO 8601"),
        (("--by", "week"), "week"),
    ):
        res = history_node.cli("stats", *args)
        assert res.code == 2 and res.err.startswith("error: ") and says in res.err, (args, res.err)
        assert res.err.count("\n") == 1 and not res.out, args


def test_the_stats_request_is_validated(history_node: NodeProcess) -> None:
    api = Api(history_node)
    assert api.ok("stats", {"by": "day", "since": "2026-03-02T00:00:00+00:00"}) == [BY_DAY[1]]
    for payload in (
        {"by": "week"},
        {"by": 1},
        {"since": "2026-03-02T00:00:00"},  # no offset: which day would it be?
        {"since": "yesterday"},
        {"since": 1700000000},
        {"until": "2026-03-02T00:00:00Z"},
    ):
        message = assert_refused(api, "stats", payload)
        assert message.startswith("invalid request"), (payload, message)


# --- export --parquet -----------------------------------------------------------------------

TABLES = ["events", "lists", "runs", "skipped_messages", "subtasks", "tasks", "worktrees"]


def test_export_writes_every_table_as_parquet_with_the_projections_rows(
    history_node: NodeProcess, tmp_path: Path
) -> None:
    node = history_node
    out = tmp_path / "new" / "export"
    result = node.ok("export", "--parquet", str(out))
    files = {f["table"]: f for f in result["files"]}
    assert sorted(files) == TABLES and result["dir"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == [f"{t}.parquet" for t in TABLES]
    seq = result["checkpoint_seq"]
    for table in TABLES:
        path = out / f"{table}.parquet"
        # Events the node appends after the export (its log checkpoints) are not in it.
        where = f" where seq <= {seq}" if table == "events" else ""
        (expected,) = node.ok("sql", f"select count(*) as n from {table}{where}")
        read_by_arrow = pq.read_table(path)
        assert files[table]["rows"] == read_by_arrow.num_rows == expected["n"], table
        assert files[table]["path"] == str(path)
    with duckdb.connect() as con:
        runs = con.execute(
            f"SELECT count(*), round(sum(cost_usd), 6), count(queued_at) "
            f"FROM read_parquet('{out / 'runs.parquet'}')"
        ).fetchone()
        assert runs == (7, 0.45, 6)
        last = con.execute(f"SELECT max(seq) FROM '{out / 'events.parquet'}'").fetchone()
        assert last == (seq,)
    schema = pq.read_schema(out / "runs.parquet")
    assert str(schema.field("started_at").type) == "timestamp[us, tz=UTC]"


def test_export_makes_a_relative_folder_absolute_where_the_cli_runs(
    history_node: NodeProcess, tmp_path: Path
) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "export", "--parquet", "rel/out", "--json"],
        env=history_node.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    assert msgspec.json.decode(res.stdout)["dir"] == str(tmp_path / "rel" / "out")
    assert (tmp_path / "rel" / "out" / "tasks.parquet").is_file()


def test_export_into_a_folder_that_is_not_empty_is_refused_and_changes_nothing(
    history_node: NodeProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    history_node.ok("export", "--parquet", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = history_node.cli("export", "--parquet", str(out))
    assert res.code == 1 and res.err.startswith("error: ") and res.err.count("\n") == 1
    assert "not empty" in res.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    assert history_node.cli("export", "--parquet", str(other)).code == 1
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_export_files_are_private_to_the_nodes_user(
    history_node: NodeProcess, tmp_path: Path
) -> None:
    out = tmp_path / "private"
    history_node.ok("export", "--parquet", str(out))
    assert {os.stat(p).st_mode & 0o777 for p in out.iterdir()} == {0o600}
    assert os.stat(out).st_mode & 0o077 == 0


def test_the_export_request_is_validated(history_node: NodeProcess, tmp_path: Path) -> None:
    api = Api(history_node)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for payload, says in (
        ({"dir": "relative/out"}, "not an absolute path"),
        ({"dir": ""}, "not an absolute path"),
        ({"dir": str(a_file)}, "not a folder"),
        ({"dir": str(a_file / "below")}, "cannot make"),
        ({"dir": "/"}, "not empty"),
        ({"dir": str(tmp_path / "a\x00b")}, "NUL"),
        ({"dir": "/" + "x" * 5000}, "invalid request"),
        ({}, "invalid request"),
        ({"dir": str(tmp_path / "x"), "format": "csv"}, "invalid request"),
    ):
        message = assert_refused(api, "export", payload)
        assert says in message, (payload, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    res = history_node.cli("export")
    assert res.code == 2 and "--parquet" in res.err and res.err.count("\n") == 1
