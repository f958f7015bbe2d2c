"""Property: after any sequence of commands, the live projection equals a rebuild, row for row."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events as ev
from claudedo_actors.api import verbs as rq
from claudedo_actors.api.decider import Decider
from events.errors import ClaudeDoError
from events.log import EventLog
from projections import Projection, refusal
from projections.rebuild import rebuild_file
from tests.conftest import JetStreamEnv

TABLES = ("lists", "tasks", "subtasks", "runs", "worktrees", "events", "skipped_messages")
ORIGIN = ev.Origin(node_id="node-p", correlation_id="c", actor="user:prop")

idx = st.integers(min_value=0, max_value=5)
command = st.one_of(
    st.tuples(st.just("list"), idx),
    st.tuples(st.just("config"), idx, idx),
    st.tuples(st.just("add"), idx, st.integers(0, 3), st.booleans()),
    st.tuples(st.sampled_from(["queue", "unqueue", "cancel", "edit", "subadd"]), idx),
    st.tuples(st.sampled_from(["subdone", "subundo"]), idx, st.integers(1, 3)),
    st.tuples(st.just("work"), idx, st.sampled_from(["done", "failed", "requeued", "stuck"])),
)


class Harness:
    """Commands decided against the live projection, appended to the real log, projected."""

    def __init__(self, env: JetStreamEnv, folder: Path) -> None:
        self.env = env
        self.log = EventLog(env.js)
        env.run(env._drop_stream())
        env.run(self.log.ensure_stream())
        self.live = Projection(folder / "live.duckdb")
        self.folder = folder
        self.lists: list[str] = []
        self.tasks: list[str] = []

    def sync(self, batch_size: int) -> None:
        new = self.env.run(self.log.read_all(self.live.checkpoint + 1))
        for i in range(0, len(new), batch_size):
            if (self.live.checkpoint + i) % 2:
                self.live.drop_cache()  # half the batches fold states read back from rows
            self.live.apply(new[i : i + batch_size])

    def append(self, appends: list[Any]) -> None:
        for a in appends:
            self.env.run(self.log.append(a.envelopes, a.expected_seq, a.guard))

    def pick(self, items: list[str], i: int) -> str | None:
        return items[i % len(items)] if items else None

    def do(self, cmd: tuple[Any, ...]) -> None:
        d = Decider(self.live, ORIGIN)
        kind = cmd[0]
        try:
            if kind == "list":
                plan = d.create_list(rq.CreateList(name=f"list-{cmd[1]}"))
            elif kind == "config":
                lst = self.pick(self.lists, cmd[1])
                if lst is None:
                    return
                plan = d.configure_list(rq.ConfigureList(list_ref=lst, model=f"m{cmd[2]}"))
            elif kind == "add":
                lst = self.pick(self.lists, cmd[1])
                if lst is None:
                    return
                req = rq.AddTask(
                    list_ref=lst,
                    title=f"task {len(self.tasks)}",
                    subtasks=[f"s{i}" for i in range(cmd[2])],
                    queue=cmd[3],
                )
                plan = d.add_task(req)
            elif kind in ("queue", "unqueue", "cancel"):
                task = self.pick(self.tasks, cmd[1])
                if task is None:
                    return
                plan = getattr(d, kind)(rq.TaskIds(tasks=[task]))
            elif kind == "edit":
                task = self.pick(self.tasks, cmd[1])
                if task is None:
                    return
                plan = d.edit_task(rq.EditTask(task=task, description=f"edited {cmd[1]}"))
            elif kind == "subadd":
                task = self.pick(self.tasks, cmd[1])
                if task is None:
                    return
                plan = d.add_subtasks(rq.AddSubtasks(task=task, titles=["extra"]))
            elif kind in ("subdone", "subundo"):
                task = self.pick(self.tasks, cmd[1])
                if task is None:
                    return
                plan = d.mark_subtasks(
                    rq.MarkSubtasks(task=task, subtasks=[str(cmd[2])]), done=kind == "subdone"
                )
            else:
                self.work(cmd[1], cmd[2])
                return
        except ClaudeDoError:
            return  # a refused command appends nothing
        self.append(plan.appends)
        self.sync(batch_size=1 + len(self.tasks) % 3)
        self.lists = [
            r[0] for r in self.live.con.execute("SELECT id FROM lists ORDER BY id").fetchall()
        ]
        self.tasks = [
            r[0] for r in self.live.con.execute("SELECT id FROM tasks ORDER BY id").fetchall()
        ]

    def work(self, i: int, outcome: str) -> None:
        """What a slot would append for a queued (or cancel-requested) task."""
        task_id = self.pick(self.tasks, i)
        if task_id is None:
            return
        state = self.live.task_state(task_id)
        assert state is not None
        events: list[ev.Event]
        if state.cancel_requested:
            events = [ev.TaskCancelled()]
        elif state.status == "queued":
            n = state.run_count + 1
            events = [
                ev.TaskClaimed(node_id="node-p", slot=0),
                ev.TaskStarted(node_id="node-p", slot=0, workdir="/w"),
                ev.WorktreeCreated(path="/w", branch="b", base_branch="main", base_commit="c0"),
                ev.RunStarted(run_number=n, node_id="node-p", slot=0, workdir="/w", prompt="p"),
                ev.RunSessionOpened(run_number=n, session_id=f"s{n}", cli_version="2.1.197"),
            ]
            if outcome == "done":
                events += [
                    ev.RunFinished(
                        run_number=n,
                        success=True,
                        result="ok",
                        cost_usd=0.5,
                        structured_output={"n": n},
                    ),
                    ev.WorktreeCommitted(
                        run_number=n, commit=f"c{n}", files_changed=1, insertions=2, deletions=0
                    ),
                    ev.TaskCompleted(result="ok"),
                ]
            elif outcome == "failed":
                events += [
                    ev.RunFinished(run_number=n, success=False, cause="api_error", error="500"),
                    ev.TaskFailed(error="500", cause="api_error"),
                ]
            elif outcome == "requeued":
                events += [ev.TaskRequeued(reason="worker lost")]
        else:
            return
        seq = state.last_seq
        for event in events:
            assert refusal(self.live.task_state(task_id), event) is None  # type: ignore[arg-type]
            (seq,) = self.env.run(self.log.append([ev.envelop(event, task_id, ORIGIN)], seq))
            self.sync(batch_size=2)

    def rebuilt(self) -> Projection:
        """The log replayed the way `claudedo projections rebuild` does (bulk mode)."""
        path = self.folder / "rebuilt.duckdb"
        everything = self.env.run(self.log.read_all(1))
        batches = [everything[i : i + 7] for i in range(0, len(everything), 7)]
        rebuild_file(path, batches)
        return Projection(path)


def _rows(p: Projection, table: str) -> list[tuple[Any, ...]]:
    # When a message was skipped is the projector's own clock, not the log's.
    columns = "* EXCLUDE (recorded_at)" if table == "skipped_messages" else "*"
    return p.con.execute(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(command, min_size=1, max_size=30))
def test_live_projection_equals_a_rebuild_row_for_row(
    jsenv: JetStreamEnv, commands: list[Any]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(jsenv, Path(folder))
        for cmd in commands:
            h.do(cmd)
        fresh = h.rebuilt()
        assert fresh.checkpoint == h.live.checkpoint
        for table in TABLES:
            assert _rows(h.live, table) == _rows(fresh, table), table
        h.live.close()
        fresh.close()
