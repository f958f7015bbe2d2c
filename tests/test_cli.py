"""The CLI end to end through `claudedo up` in a temp home: commands, JSON shapes, bad input."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import nats

import events as ev
from tests.conftest import NodeProcess, home_url, wait_until

TASK_KEYS = {
    "id",
    "list_id",
    "title",
    "description",
    "status",
    "model",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def _list(node: NodeProcess, repo: Path, name: str = "demo") -> dict:
    return node.ok("list", "add", name, "--dir", str(repo))


def test_list_add_and_ls(node: NodeProcess, git_repo: Path) -> None:
    created = node.ok("list", "add", "demo", "--dir", str(git_repo), "--model", "claude-x")
    assert created["name"] == "demo" and created["dir"] == str(git_repo.resolve())
    assert created["model"] == "claude-x" and ISO_UTC.match(created["created_at"])
    listed = node.ok("list", "ls")
    assert [row["id"] for row in listed] == [created["id"]]
    human = node.cli("list", "ls")
    assert human.code == 0 and "demo" in human.out


def test_list_without_dir_is_a_sandbox_list(node: NodeProcess) -> None:
    assert node.ok("list", "add", "scratch")["dir"] is None


def test_list_config_changes_and_clears_settings(node: NodeProcess, git_repo: Path) -> None:
    lst = _list(node, git_repo)
    changed = node.ok("list", "config", "demo", "--model", "m2", "--max-turns", "5")
    assert changed["model"] == "m2" and changed["max_turns"] == 5
    cleared = node.ok("list", "config", lst["id"][:6], "--model", "", "--name", "renamed")
    assert cleared["model"] is None and cleared["name"] == "renamed" and cleared["max_turns"] == 5


def test_task_add_show_and_tasks(node: NodeProcess, git_repo: Path) -> None:
    lst = _list(node, git_repo)
    task = node.ok(
        "task",
        "add",
        "demo",
        "Add retry",
        "-d",
        "  to the HTTP client ",
        "--subtask",
        "write test",
        "--subtask",
        "implement",
    )
    assert task.keys() >= TASK_KEYS
    assert task["status"] == "draft" and task["list_id"] == lst["id"]
    assert task["description"] == "to the HTTP client"
    assert [s["title"] for s in task["subtasks"]] == ["write test", "implement"]
    assert ISO_UTC.match(task["created_at"]) and task["started_at"] is None
    shown = node.ok("task", "show", task["id"][:8])
    assert shown["id"] == task["id"]
    rows = node.ok("tasks")
    assert [r["id"] for r in rows] == [task["id"]] and rows[0].keys() >= TASK_KEYS


def test_task_add_by_list_id_prefix_and_queue_flag(node: NodeProcess, git_repo: Path) -> None:
    lst = _list(node, git_repo)
    task = node.ok("task", "add", lst["id"][:5], "T", "--queue")
    assert task["status"] == "queued" and task["list_id"] == lst["id"]


def test_queue_unqueue_cancel_several_ids_and_requeue(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    a = node.ok("task", "add", "demo", "A")["id"]
    b = node.ok("task", "add", "demo", "B")["id"]
    queued = node.ok("task", "queue", a[:8], b)
    assert [t["status"] for t in queued] == ["queued", "queued"]
    assert [t["status"] for t in node.ok("task", "unqueue", a)] == ["draft"]
    assert [t["status"] for t in node.ok("task", "cancel", a, b)] == ["cancelled", "cancelled"]
    again = node.ok("task", "queue", b)[0]
    assert again["status"] == "queued" and again["finished_at"] is None
    assert {r["id"] for r in node.ok("tasks", "--status", "cancelled")} == {a}
    assert {r["id"] for r in node.ok("tasks", "--status", "queued", "--list", "demo")} == {b}


def test_task_edit_and_subtasks(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    t = node.ok("task", "add", "demo", "Old", "--subtask", "one")["id"]
    edited = node.ok("task", "edit", t, "--title", "New", "-d", "desc", "--model", "m")
    assert (edited["title"], edited["description"], edited["model"]) == ("New", "desc", "m")
    added = node.ok("task", "subtask", "add", t, "two", "three")
    assert [s["title"] for s in added["subtasks"]] == ["one", "two", "three"]
    done = node.ok("task", "subtask", "done", t, "1", "3")
    assert [s["done"] for s in done["subtasks"]] == [True, False, True]
    undone = node.ok("task", "subtask", "undo", t, "3")
    assert [s["done"] for s in undone["subtasks"]] == [True, False, False]


def test_audit_lists_every_event_of_the_task_in_order(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    t = node.ok("task", "add", "demo", "A", "--queue")["id"]
    node.ok("task", "cancel", t)
    events = node.ok("audit", t)
    assert [e["type"] for e in events] == ["TaskCreated", "TaskQueued", "TaskCancelled"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert all(e["actor"].startswith("user:") and e["node"] for e in events)
    assert events[0]["payload"]["title"] == "A"
    human = node.cli("audit", t[:8])
    assert human.code == 0
    lines = human.out.splitlines()
    assert lines[0].split() == ["seq", "time", "node", "actor", "what"]
    whats = [line for line in lines[2:]]
    assert 'created "A"' in whats[0] and "queued" in whats[1] and "cancelled" in whats[2]
    assert all(events[0]["actor"][:22] in line for line in whats[:3])
    assert lines[-1] == "0 runs (0 succeeded), $0.0000, 0/0 tokens in/out, 0 commits, cancelled"
    assert node.cli("audit", "show", t[:8]).out == human.out


def test_sql_reads_and_refuses_writes(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    node.ok("task", "add", "demo", "A", "--queue")
    node.ok("task", "add", "demo", "B")
    rows = node.ok("sql", "select status, count(*) as n from tasks group by 1 order by 1")
    assert rows == [{"status": "draft", "n": 1}, {"status": "queued", "n": 1}]
    for statement in (
        "delete from tasks",
        "drop table tasks",
        "insert into lists select * from lists",
        "copy tasks to 'x.csv'",
        "attach 'x.db'",
        "select 1; delete from tasks",
        "select * from read_csv('/etc/passwd')",
    ):
        res = node.cli("sql", statement)
        assert res.code != 0 and res.err.startswith("error: ") and res.err.count("\n") == 1, (
            statement
        )
    assert node.ok("sql", "select count(*) as n from tasks") == [{"n": 2}]


def test_info_reports_node_stream_and_checkpoint(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    info = node.ok("info")
    assert {"node_id", "nats_url", "stream", "last_seq", "checkpoint_seq", "slots"} <= info.keys()
    assert info["last_seq"] == info["checkpoint_seq"] == 1 and info["slots"] == 0


def test_rebuild_gives_identical_results(node: NodeProcess, git_repo: Path) -> None:
    _list(node, git_repo)
    for i in range(5):
        node.ok("task", "add", "demo", f"T{i}", "--queue" if i % 2 else "--subtask=x")
    query = "select * from tasks order by id"
    before = node.ok("sql", query), node.ok("sql", "select * from events order by seq")
    result = node.ok("projections", "rebuild")
    assert result["rebuilt_to_seq"] == result["checkpoint_seq"] == node.ok("info")["last_seq"]
    assert (node.ok("sql", query), node.ok("sql", "select * from events order by seq")) == before
    node.ok("task", "add", "demo", "after rebuild")  # the live feed goes on after the swap
    assert len(node.ok("tasks")) == 6


def test_bad_input_is_one_line_and_a_non_zero_exit(
    node: NodeProcess, git_repo: Path, tmp_path: Path
) -> None:
    _list(node, git_repo)
    plain = tmp_path / "plain"
    plain.mkdir()
    empty_repo = tmp_path / "empty"
    empty_repo.mkdir()
    node.cli("list", "add", "x")  # a second list
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=empty_repo, check=True)
    a = node.ok("task", "add", "demo", "A")["id"]
    # Two tasks sharing a first hex digit make that digit an ambiguous prefix.
    ids = [a] + [node.ok("task", "add", "demo", f"T{i}")["id"] for i in range(20)]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    cases = {
        ("task", "show", "ffffffff-0000"): "not found",
        ("task", "show", shared): "ambiguous",
        ("task", "queue", a, "nope"): "not found",
        ("tasks", "--status", "sleeping"): "unknown status",
        ("tasks", "--list", "no-such-list"): "not found",
        ("task", "add", "no-such-list", "T"): "not found",
        ("list", "add", "bad", "--dir", str(tmp_path / "missing")): "does not exist",
        ("list", "add", "bad", "--dir", str(plain)): "not a git work tree",
        ("list", "add", "bad", "--dir", str(empty_repo)): "no commit",
        ("list", "add", "demo"): "already exists",
        ("list", "add", "  "): "must not be empty",
        ("task", "add", "demo", " "): "must not be empty",
        ("task", "unqueue", a): "is draft",
        ("task", "add", "demo", "T", "--permission-mode", "yolo"): "unknown permission mode",
        ("task", "add", "demo", "T", "--max-turns", "0"): "not in the range [1,",
        ("task", "subtask", "done", a, "9"): "no sub-task",
        ("task", "frobnicate"): "No such command",
        ("tasks", "--limit", "x"): "not a valid integer",
        ("tasks", "--limit", "99999999999999999999"): "range",
        ("task", "add", "demo", "T", "--max-turns", "99999999999999999999"): "range",
        ("task", "add", "demo", "T", "--timeout", "nan"): "range",
        ("task", "edit", a, "--max-budget-usd", "inf"): "range",
        ("task", "subtask", "add", a, "one"): "",
        ("task", "subtask", "done", a, "1"): "",
        ("list", "add", "demo2", "--dir", "relative/path"): "does not exist",
    }
    for args, text in cases.items():
        if not text:  # set-up steps among the cases
            assert node.cli(*args).code == 0, args
            continue
        res = node.cli(*args)
        assert res.code != 0, args
        assert res.err.count("\n") == 1 and res.err.startswith("error: "), (args, res.err)
        assert text.lower() in res.err.lower(), (args, res.err)
        assert "Traceback" not in res.err + res.out
    res = node.cli("task", "subtask", "done", a, "1")
    assert res.code == 1 and res.err == "error: cannot tick sub-tasks: sub-task 1 is already done\n"
    # Nothing a refused command did reached the log: the queue of `a, nope` changed nothing.
    assert node.ok("task", "show", a)["status"] == "draft"


def test_no_node_running_is_a_clear_error(tmp_path: Path) -> None:
    idle = NodeProcess(tmp_path / "idle-home")
    idle.home.mkdir()
    for args in (("tasks",), ("info",), ("list", "ls")):
        res = idle.cli(*args)
        assert (
            res.code == 1
            and res.err
            == f"error: no node running for home {idle.home} (start one with: claudedo up)\n"
        )


def test_malformed_api_requests_get_an_error_and_the_node_lives(node: NodeProcess) -> None:
    url = home_url(node.home, "operator")

    async def ask(subject: str, data: bytes) -> dict:
        nc = await nats.connect(url, inbox_prefix="_INBOX.operator")  # an operator's inboxes
        try:
            msg = await nc.request(subject, data, timeout=10)
            return msgspec.json.decode(msg.data)
        finally:
            await nc.close()

    cases = [
        ("claudedo.api.task.add", b"not json", "invalid"),
        ("claudedo.api.task.add", b'{"title": 5}', "invalid"),
        ("claudedo.api.task.add", b'{"list": "x", "title": "t", "evil": 1}', "invalid"),
        ("claudedo.api.tasks", b'{"limit": -1}', "invalid"),
        ("claudedo.api.no.such.verb", b"{}", "invalid"),
        ("claudedo.api.task.queue", b'{"tasks": []}', "invalid"),
    ]
    for subject, data, code in cases:
        reply = asyncio.run(ask(subject, data))
        assert reply["error"]["code"] == code, (subject, data, reply)
        assert "\n" not in reply["error"]["message"]
    assert node.ok("info")["node_id"]


def test_foreign_messages_on_event_subjects_are_skipped_and_recorded(
    node: NodeProcess, git_repo: Path
) -> None:
    url = home_url(node.home)

    async def publish() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.publish("claudedo.evt.task.x.Bogus", b"garbage")
        await js.publish("claudedo.evt.list.y.ListCreated", b'{"event": {"type": "ListCreated"}}')
        await nc.close()

    asyncio.run(publish())
    # The node still serves, projected past the foreign messages, and a list command is not
    # blocked by the foreign message on a list subject.
    _list(node, git_repo)
    skipped = node.ok("sql", "select subject, reason from skipped_messages order by seq")
    assert [s["subject"] for s in skipped] == [
        "claudedo.evt.task.x.Bogus",
        "claudedo.evt.list.y.ListCreated",
    ]
    info = node.ok("info")
    assert info["checkpoint_seq"] == info["last_seq"] == 3


def test_events_are_published_for_external_subscribers(node: NodeProcess, git_repo: Path) -> None:
    url = home_url(node.home)
    got: list[ev.Envelope] = []

    async def subscribe_and_act() -> None:
        nc = await nats.connect(url)
        sub = await nc.subscribe("claudedo.evt.task.*.TaskQueued")
        await nc.flush()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: node.ok("task", "add", "demo", "T", "--queue")
        )
        msg = await sub.next_msg(timeout=10)
        got.append(ev.decode(msg.data))
        await nc.close()

    _list(node, git_repo)
    asyncio.run(subscribe_and_act())
    assert isinstance(got[0].event, ev.TaskQueued)
    wait_until(lambda: node.ok("tasks", "--status", "queued"), what="queued task")


def test_a_foreign_message_on_a_task_subject_does_not_block_the_task(
    node: NodeProcess, git_repo: Path
) -> None:
    url = home_url(node.home)
    _list(node, git_repo)
    t = node.ok("task", "add", "demo", "T")["id"]

    async def publish() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().publish(f"claudedo.evt.task.{t}.TaskQueued", b"{}")
        await nc.close()

    asyncio.run(publish())
    assert node.ok("task", "queue", t)[0]["status"] == "queued"


def test_poison_events_on_the_log_are_skipped_and_the_node_lives(
    node: NodeProcess, git_repo: Path
) -> None:
    url = home_url(node.home)
    origin = ev.Origin(node_id="intruder", correlation_id="c", actor="user:x")
    good = ev.envelop(ev.TaskCreated(list_id="l", title="t"), "poison-1", origin)
    huge = ev.encode(good).replace(b'"max_turns":null', b'"max_turns":99999999999999999999')
    odd_time = ev.encode(ev.envelop(ev.TaskCreated(list_id="l", title="t"), "poison-2", origin))
    start = odd_time.index(b'"occurred_at":"') + 15
    odd_time = odd_time[:start] + b"2024-01-01t00:00:00z" + odd_time[start + 20 :]

    async def publish() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.publish(good.subject, huge)
        await js.publish("claudedo.evt.task.poison-2.TaskCreated", odd_time)
        await nc.close()

    asyncio.run(publish())
    _list(node, git_repo)
    info = node.ok("info")
    assert info["checkpoint_seq"] == info["last_seq"] == 3
    skipped = node.ok("sql", "select seq from skipped_messages order by seq")
    assert [s["seq"] for s in skipped][:1] == [1]
    assert node.ok("task", "add", "demo", "still works")["status"] == "draft"


def test_commands_during_rebuilds_always_read_their_own_writes(
    node: NodeProcess, git_repo: Path
) -> None:
    import threading

    from claudedo_actors.cli.client import NodeClient

    _list(node, git_repo)
    for i in range(30):
        node.ok("task", "add", "demo", f"before {i}")
    failures: list[str] = []
    done = threading.Event()

    def add_tasks() -> None:
        client = NodeClient(node.home)
        i = 0
        while not done.is_set():
            try:
                task = client.request("task.add", {"list": "demo", "title": f"during {i}"})
                assert task["title"] == f"during {i}"
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            i += 1

    worker = threading.Thread(target=add_tasks)
    worker.start()
    try:
        for _ in range(4):
            node.ok("projections", "rebuild")
    finally:
        done.set()
        worker.join(60)
    assert failures == []
    info = node.ok("info")
    assert info["checkpoint_seq"] == info["last_seq"]


def test_a_long_sql_query_is_stopped_at_its_time_limit(node: NodeProcess) -> None:
    res = node.cli("sql", "select count(*) from range(100000000000)", "--timeout", "0.5")
    assert res.code == 1 and res.err == "error: query ran longer than 0.5s and was stopped\n"
    assert node.ok("sql", "select 1 as one") == [{"one": 1}]


def test_sql_json_keeps_repeated_column_names(node: NodeProcess) -> None:
    assert node.ok("sql", "select 1 as a, 2 as a") == [{"a": 1, "a_2": 2}]


def test_concurrent_list_commands_all_succeed(node: NodeProcess, git_repo: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from claudedo_actors.cli.client import NodeClient

    def add(i: int) -> str:
        return str(NodeClient(node.home).request("list.add", {"name": f"l{i}"})["name"])

    with ThreadPoolExecutor(12) as pool:
        names = list(pool.map(add, range(24)))
    assert sorted(names) == sorted(f"l{i}" for i in range(24))
    assert len(node.ok("list", "ls")) == 24


def test_user_text_is_shown_literally_in_every_human_view(node: NodeProcess) -> None:
    url = home_url(node.home)
    name, title, error = "[red]L[/red]", "[bold]T[/bold] :smile: \x1b[31mred", "[red]oops\x07"
    lst = node.ok("list", "add", name)
    task = node.ok("task", "add", lst["id"], title, "-d", "[i]d[/i]", "--subtask", "[u]s[/u]")
    origin = ev.Origin(node_id="[b]n[/b]", correlation_id="c", actor="[b]a[/b]")

    def publish(*events: ev.Event) -> None:
        """Events of a run as a node would record them, with the agent's text in them."""

        async def run() -> None:
            nc = await nats.connect(url)
            for e in events:
                env = ev.envelop(e, task["id"], origin)
                await nc.jetstream().publish(env.subject, ev.encode(env))
            await nc.close()

        asyncio.run(run())

    publish(
        ev.TaskQueued(),
        ev.TaskClaimed(node_id="[b]n[/b]", slot=0),
        ev.TaskStarted(node_id="[b]n[/b]", slot=0, workdir="/w"),
        ev.RunStarted(run_number=1, node_id="[b]n[/b]", slot=0, workdir="/w", prompt="p"),
        ev.RunFinished(run_number=1, success=False, cause="[red]c[/red]", error=error),
    )
    wait_until(lambda: node.ok("runs", task["id"])[0]["finished_at"], what="the run projected")
    views = {"watch": node.cli("watch", "--once"), "runs": node.cli("runs", task["id"])}
    publish(ev.TaskFailed(error=error, cause="[red]c[/red]"))
    wait_until(lambda: node.ok("task", "show", task["id"])["error"], what="the failure")
    views |= {
        "list ls": node.cli("list", "ls"),
        "task show": node.cli("task", "show", task["id"]),
        "tasks": node.cli("tasks"),
        "audit": node.cli("audit", task["id"]),
        "sql": node.cli("sql", "select title, '[red]s[/red]' as '[b]c[/b]' from tasks"),
    }
    for view, res in views.items():
        assert res.code == 0 and "\x1b" not in res.out and "\x07" not in res.out, (view, res.err)
        assert "😄" not in res.out, view
    assert name in views["list ls"].out
    shown = views["task show"].out
    assert "[bold]T[/bold] :smile: \\x1b[31mred" in shown
    for text in ("[i]d[/i]", "[u]s[/u]", "[red]c[/red]", "[red]oops\\x07"):
        assert text in shown, text
    assert "[bold]T[/bold]" in views["tasks"].out
    assert "[red]c[/red]: [red]oops\\x07" in views["runs"].out
    assert "[b]a[/b]" in views["audit"].out and "[b]n[/b]" in views["audit"].out
    assert "[b]n[/b]" in views["watch"].out and "[bold]T[/bold]" in views["watch"].out
    assert "[red]s[/red]" in views["sql"].out and "[b]c[/b]" in views["sql"].out
    res = node.cli("task", "add", "[red]nolist[/red]", "T")
    assert res.code == 1 and res.err == "error: list [red]nolist[/red] not found\n"
    res = node.cli("task", "show", "\x1b[2J")
    assert res.code == 1 and "\x1b" not in res.err and "\\x1b[2j" in res.err


def test_the_cli_imports_neither_asyncio_nor_the_catalog_nor_nats_nor_duckdb() -> None:
    # Each command is a new process: what it imports is most of its round trip.
    script = (
        "import sys, claudedo_actors.cli, claudedo_actors.cli.client; "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.split())  # fmt: skip
    heavy = {"asyncio", "events.catalog", "events.codec", "nats", "duckdb", "pyarrow", "rich"}
    assert not loaded & heavy
