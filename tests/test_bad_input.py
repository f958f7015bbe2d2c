"""Bad input gets a clear error and changes nothing: every API request, through a real node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

import events as ev
from events.wire import WireConnection
from tests.conftest import NodeProcess, _git, wait_until

INT32 = 2**31 - 1


class Api:
    """Raw requests to a node's API: bytes in, the decoded reply out."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.url = json.loads((node.home / "node.json").read_text())["nats_url"]

    def raw(self, verb: str, data: bytes) -> dict[str, Any]:
        conn = WireConnection(self.url, 30)
        try:
            reply: dict[str, Any] = msgspec.json.decode(conn.request(f"claudedo.api.{verb}", data))
            return reply
        finally:
            conn.close()

    def ask(self, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.raw(verb, msgspec.json.encode(payload))

    def ok(self, verb: str, payload: dict[str, Any] | None = None) -> Any:
        reply = self.ask(verb, payload or {})
        assert "ok" in reply, (verb, payload, reply)
        return reply["ok"]

    def last_seq(self) -> int:
        return int(self.ok("info")["last_seq"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One node for the module (no slots), with a list `demo` on a repository and a task."""
    root = tmp_path_factory.mktemp("bad-input")
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "init")
    node = NodeProcess(root / "home").start()
    client = Api(node)
    client.ok("list.add", {"name": "demo", "dir": str(repo)})
    client.ok("task.add", {"list": "demo", "title": "the task", "subtasks": ["one"]})
    yield client
    node.stop()


def _task_id(api: Api) -> str:
    return str(api.ok("tasks", {"list": "demo", "limit": 1})[0]["id"])


def assert_refused(api: Api, verb: str, payload: dict[str, Any], code: str = "invalid") -> str:
    """The request gets a one-line error with `code`, and the log is as it was."""
    before = api.last_seq()
    reply = api.ask(verb, payload)
    assert "error" in reply, (verb, payload, reply)
    assert reply["error"]["code"] == code, (verb, payload, reply)
    message = reply["error"]["message"]
    assert message and "\n" not in message and len(message) <= 500
    assert api.last_seq() == before, (verb, payload, "appended events")
    return str(message)


# --- 1. every request carries the catalog's ranges ----------------------------------------

_SETTINGS_OUT_OF_RANGE: list[dict[str, Any]] = [
    {"max_turns": 0},
    {"max_turns": -3},
    {"max_turns": INT32 + 1},
    {"max_turns": 1.5},
    {"max_budget_usd": 0},
    {"max_budget_usd": -0.01},
    {"max_budget_usd": 1e13},
    {"timeout_s": 0},
    {"timeout_s": -1},
    {"timeout_s": 1e10},
    {"timeout_s": "10"},
    {"model": "m" * 201},
    {"allowed_tools": ["t"] * 1001},
    {"system_prompt": "p" * 100_001},
]
# (verb, payload); TASK and LIST stand for the fixture's task and list.
OUT_OF_RANGE: list[tuple[str, dict[str, Any]]] = [
    *[("list.add", {"name": "other", **s}) for s in _SETTINGS_OUT_OF_RANGE],
    ("list.add", {"name": "n" * 201}),
    ("list.add", {"name": "other", "dir": "/" + "d" * 4096}),
    *[("list.config", {"list": "LIST", **s}) for s in _SETTINGS_OUT_OF_RANGE],
    ("list.config", {"list": "LIST", "name": "n" * 201}),
    *[("task.add", {"list": "LIST", "title": "t", **s}) for s in _SETTINGS_OUT_OF_RANGE],
    ("task.add", {"list": "LIST", "title": "t" * 501}),
    ("task.add", {"list": "LIST", "title": "t", "description": "d" * 100_001}),
    ("task.add", {"list": "LIST", "title": "t", "subtasks": ["s"] * 1001}),
    ("task.add", {"list": "LIST", "title": "t", "subtasks": ["s" * 501]}),
    *[("task.edit", {"task": "TASK", "title": "kept?", **s}) for s in _SETTINGS_OUT_OF_RANGE],
    ("task.edit", {"task": "TASK", "title": "t" * 501}),
    ("task.edit", {"task": "TASK", "description": "d" * 100_001}),
    ("task.continue", {"task": "TASK", "prompt": "p" * 100_001}),
    ("task.subtask.add", {"task": "TASK", "titles": ["s" * 501]}),
    ("task.subtask.add", {"task": "TASK", "titles": ["s"] * 1001}),
    ("task.subtask.done", {"task": "TASK", "subtasks": ["1"] * 1001}),
    ("task.subtask.undo", {"task": "TASK", "subtasks": ["1"] * 1001}),
    *[(v, {"tasks": ["TASK"] * 1001}) for v in ("task.queue", "task.unqueue", "task.cancel")],
    *[(v, {"tasks": ["x" * 201]}) for v in ("task.queue", "task.unqueue", "task.cancel")],
    *[
        (v, {"task": "x" * 201})
        for v in (
            "task.show",
            "task.edit",
            "task.continue",
            "runs",
            "audit",
            "worktree.diff",
            "worktree.merge",
            "worktree.discard",
        )
    ],
    ("tasks", {"limit": 0}),
    ("tasks", {"limit": 10**9 + 1}),
    ("tasks", {"offset": -1}),
    ("tasks", {"status": "s" * 201}),
    ("sql", {"query": "select 1", "timeout_s": 0}),
    ("sql", {"query": "select 1", "timeout_s": 3601}),
    ("sql", {"query": "select 1" + " " * 100_001}),
    *[
        (v, {"actor": "a" * 201})
        for v in ("info", "board", "list.ls", "projections.rebuild", "tasks")
    ],
    *[(v, {"request_id": "r" * 201}) for v in ("task.add", "list.add")],
]


@pytest.mark.parametrize(
    ("verb", "payload"),
    OUT_OF_RANGE,
    ids=[f"{v}-{'-'.join(p)[:60]}" for v, p in OUT_OF_RANGE],
)
def test_an_out_of_range_value_is_refused_and_nothing_is_appended(
    api: Api, verb: str, payload: dict[str, Any]
) -> None:
    task_id = _task_id(api)
    names = {"TASK": task_id, "LIST": "demo"}
    payload = {k: names.get(v, v) if isinstance(v, str) else v for k, v in payload.items()}
    if "tasks" in payload and isinstance(payload["tasks"], list):
        payload["tasks"] = [names.get(t, t) for t in payload["tasks"]]
    before = api.ok("task.show", {"task": task_id})
    message = assert_refused(api, verb, payload)
    assert message.startswith("invalid request: "), message
    assert api.ok("task.show", {"task": task_id}) == before


def test_an_edit_with_one_bad_value_changes_no_field(api: Api) -> None:
    task_id = _task_id(api)
    before = api.ok("task.show", {"task": task_id})
    message = assert_refused(
        api, "task.edit", {"task": task_id, "title": "renamed", "max_turns": INT32 + 1}
    )
    assert message == "invalid request: max_turns: expected `int` <= 2147483647"
    assert api.ok("task.show", {"task": task_id}) == before
    assert api.ok("sql", {"query": "select count(*) from skipped_messages"})["rows"] == [[0]]


def test_values_at_the_ends_of_the_ranges_are_accepted(api: Api) -> None:
    task_id = _task_id(api)
    edited = api.ok(
        "task.edit",
        {"task": task_id, "max_turns": INT32, "max_budget_usd": 1e12, "timeout_s": 1e9},
    )
    assert (edited["max_turns"], edited["max_budget_usd"], edited["timeout_s"]) == (
        INT32,
        1e12,
        1e9,
    )
    edited = api.ok("task.edit", {"task": task_id, "max_turns": 1, "timeout_s": 0.001})
    assert (edited["max_turns"], edited["timeout_s"]) == (1, 0.001)
    cleared = api.ok(
        "task.edit", {"task": task_id, "max_turns": None, "max_budget_usd": None, "timeout_s": None}
    )
    assert (cleared["max_turns"], cleared["max_budget_usd"], cleared["timeout_s"]) == (None,) * 3
    assert api.ok("sql", {"query": "select count(*) from skipped_messages"})["rows"] == [[0]]


def test_the_cli_refuses_what_the_api_refuses(api: Api) -> None:
    task_id = _task_id(api)
    for args in (
        ("task", "edit", task_id, "--max-turns", "0"),
        ("task", "edit", task_id, "--max-turns", str(INT32 + 1)),
        ("task", "edit", task_id, "--max-budget-usd", "-1"),
        ("task", "edit", task_id, "--timeout", "1e10"),
        ("list", "config", "demo", "--max-budget-usd", "0"),
        ("sql", "select 1", "--timeout", "3601"),
        ("tasks", "--limit", "0"),
    ):
        res = api.node.cli(*args)
        assert res.code == 2 and res.err.startswith("error: ") and res.err.count("\n") == 1, args
        assert "range" in res.err, (args, res.err)


# --- 2. aggregate ids: one alphabet in the envelope, refs checked before any lookup --------

ORIGIN = ev.Origin(node_id="elsewhere", correlation_id="c", actor="user:x")


def publish(api: Api, messages: list[tuple[str, bytes]]) -> None:
    """Append raw messages to the node's log, as any program with access to NATS could."""

    async def run() -> None:
        nc = await nats.connect(api.url)
        js = nc.jetstream()
        for subject, data in messages:
            await js.publish(subject, data)
        await nc.close()

    asyncio.run(run())


def _caught_up(api: Api) -> Any:
    info = api.ok("info")
    return info["checkpoint_seq"] == info["last_seq"]


def _skipped_after(api: Api, seq: int) -> list[tuple[str, str]]:
    rows = api.ok(
        "sql",
        {"query": f"select subject, reason from skipped_messages where seq > {seq} order by seq"},
    )["rows"]
    return [(r[0], r[1]) for r in rows]


def _created(aggregate_id: str) -> bytes:
    """A TaskCreated envelope whose aggregate id is `aggregate_id`, whatever it is."""
    env = ev.envelop(ev.TaskCreated(list_id="l", title="t"), "placeholder", ORIGIN)
    raw = msgspec.json.decode(ev.encode(env))
    raw["aggregate_id"] = aggregate_id
    return msgspec.json.encode(raw)


@pytest.mark.parametrize(
    "bad_id",
    ["UPPER", "under_score", "x" * 65, "-leading", "caf\u00e9", "a\u200bb", "1e\u0301"],
    ids=["uppercase", "underscore", "over-long", "leading-dash", "accent", "zero-width", "nfd"],
)
def test_a_message_with_an_id_outside_the_alphabet_is_skipped_and_recorded(
    api: Api, bad_id: str
) -> None:
    seq = api.last_seq()
    subject = f"claudedo.evt.task.{bad_id}.TaskCreated"
    publish(api, [(subject, _created(bad_id))])
    wait_until(lambda: _caught_up(api) and api.last_seq() > seq, what="projection caught up")
    [(got_subject, reason)] = _skipped_after(api, seq)
    assert got_subject == subject and "not an id of the node's alphabet" in reason
    found = api.ok("sql", {"query": "select count(*) from tasks where title = 't'"})
    assert found["rows"] == [[0]]


def test_a_message_whose_subject_names_another_id_is_skipped_and_recorded(api: Api) -> None:
    seq = api.last_seq()
    real = ev.new_aggregate_id()
    subject = f"claudedo.evt.task.{ev.new_aggregate_id()}.TaskCreated"
    publish(api, [(subject, _created(real))])
    wait_until(lambda: _caught_up(api) and api.last_seq() > seq, what="projection caught up")
    assert _skipped_after(api, seq) == [(subject, "subject does not match the event")]
    assert api.ask("task.show", {"task": real})["error"]["code"] == "not_found"


def test_envelop_refuses_an_id_the_log_would_skip() -> None:
    for bad in ("..", "a/b", "a.b", "", "x" * 65, "a\x00", "A"):
        with pytest.raises(ValueError, match="not an aggregate id"):
            ev.envelop(ev.TaskQueued(), bad, ORIGIN)


BAD_REFS = ["..", "../..", "/", "a/b", "/etc/passwd", "a\x00b", "\x00", "x" * 37, "a" * 200,
            "é", "*", ">", "a.b", "a b", "-"]  # fmt: skip
_REF_VERBS = [
    ("task.show", lambda r: {"task": r}),
    ("task.edit", lambda r: {"task": r, "title": "x"}),
    ("task.continue", lambda r: {"task": r, "prompt": "p"}),
    ("task.queue", lambda r: {"tasks": [r]}),
    ("task.unqueue", lambda r: {"tasks": [r]}),
    ("task.cancel", lambda r: {"tasks": [r]}),
    ("task.subtask.add", lambda r: {"task": r, "titles": ["x"]}),
    ("task.subtask.done", lambda r: {"task": r, "subtasks": ["1"]}),
    ("task.subtask.undo", lambda r: {"task": r, "subtasks": ["1"]}),
    ("runs", lambda r: {"task": r}),
    ("audit", lambda r: {"task": r}),
    ("worktree.diff", lambda r: {"task": r}),
    ("worktree.merge", lambda r: {"task": r}),
    ("worktree.discard", lambda r: {"task": r}),
    ("task.add", lambda r: {"list": r, "title": "x"}),
    ("list.config", lambda r: {"list": r, "model": "m"}),
    ("tasks", lambda r: {"list": r}),
]


@pytest.mark.parametrize(("verb", "make"), _REF_VERBS, ids=[v for v, _ in _REF_VERBS])
def test_a_reference_that_cannot_name_an_aggregate_is_not_found(
    api: Api, verb: str, make: Any
) -> None:
    for ref in BAD_REFS:
        message = assert_refused(api, verb, make(ref), code="not_found")
        assert message.isprintable() and "\x00" not in message, (verb, ref, message)
        assert message.endswith("not found"), (verb, ref, message)


def test_a_sub_task_reference_in_other_digits_is_not_found(api: Api) -> None:
    task_id = _task_id(api)
    for ref in ("²", "٣", "9" * 150, "0", "-1", "1.0", "\x00"):
        message = assert_refused(
            api, "task.subtask.done", {"task": task_id, "subtasks": [ref]}, code="not_found"
        )
        assert "no sub-task" in message and message.isprintable(), (ref, message)


def test_log_reads_no_file_the_log_names_outside_a_logs_folder(api: Api, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not print me\n")
    task_id = ev.new_aggregate_id()
    list_id = api.ok("list.ls")[0]["id"]
    events: list[ev.Event] = [
        ev.TaskCreated(list_id=list_id, title="forged"),
        ev.TaskQueued(),
        ev.TaskClaimed(node_id="elsewhere", slot=0),
        ev.TaskStarted(node_id="elsewhere", slot=0, workdir=str(tmp_path)),
        ev.RunStarted(
            run_number=1,
            node_id="elsewhere",
            slot=0,
            workdir=str(tmp_path),
            prompt="p",
            log_path=str(secret),
        ),
        ev.RunFinished(run_number=1, success=True),
    ]
    envs = [ev.envelop(e, task_id, ORIGIN) for e in events]
    publish(api, [(env.subject, ev.encode(env)) for env in envs])
    wait_until(lambda: "ok" in api.ask("runs", {"task": task_id}), what="forged task projected")
    assert api.ok("runs", {"task": task_id})[0]["log_path"] == str(secret)
    res = api.node.cli("log", task_id)
    assert "do not print me" not in res.out + res.err
    assert "Traceback" not in res.err and res.err.count("\n") <= 1
