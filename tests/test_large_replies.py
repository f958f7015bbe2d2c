"""Replies larger than a NATS message are paged or chunked, never dropped (decision 0016)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events as ev
from claudedo_actors.api import pages
from claudedo_actors.cli.client import NodeClient
from events.wire import WireConnection
from tests.bulk_support import ORIGIN, Counter, add_tasks, publish, wait_for_projection
from tests.conftest import NodeProcess, home_url, wait_until

MANY = 4000  # 4,000 tasks of about 700 bytes each: a listing of about 3 MB
MAX_PAYLOAD = 1 << 20  # the embedded server's default


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("large") / "home").start()
    add_tasks(node, MANY, description=lambda i: f"description of task {i} " * 12)
    node.ok("list", "add", "other")  # where tests add tasks of their own
    yield node
    node.stop()


def _raw(node: NodeProcess, verb: str, payload: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """Every message of a reply as (headers, payload), pulled as the CLI pulls them."""
    conn = WireConnection(home_url(node.home, "operator"), 30)
    try:
        inbox = "_INBOX.operator.test-large"
        conn.send(f"SUB {inbox} 1\r\n".encode())
        conn.pub(f"claudedo.api.{verb}", inbox, msgspec.json.encode(payload))
        frames = conn.frames()
        got = []
        while True:
            _, _, headers, data = next(frames)
            got.append((headers, data))
            following = [
                line.split(b":", 1)[1].strip()
                for line in headers.split(b"\r\n")
                if line.lower().startswith(pages.NEXT.lower().encode() + b":")
            ]
            if not following:
                return got
            conn.pub(following[0].decode(), inbox, b"")
    finally:
        conn.close()


def test_tasks_lists_every_task_of_a_listing_larger_than_a_message(many: NodeProcess) -> None:
    rows = many.ok("tasks", "--list", "bulk")
    assert [r["title"] for r in rows] == [f"task {i}" for i in range(MANY)]
    assert len({r["id"] for r in rows}) == MANY


def test_the_json_of_a_paged_listing_is_one_array_as_before(many: NodeProcess) -> None:
    res = many.cli("tasks", "--list", "bulk", "--json")
    assert res.code == 0
    rows = json.loads(res.out)
    assert res.out == json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    empty = many.cli("tasks", "--status", "done", "--json")
    assert empty.code == 0 and empty.out == "[]\n"


def test_every_message_of_a_paged_reply_fits_the_servers_max_payload(many: NodeProcess) -> None:
    messages = _raw(many, "tasks", {"list": "bulk", "paged": True})
    assert len(messages) > 2
    assert all(len(h) + len(d) <= MAX_PAYLOAD for h, d in messages)
    parts = [msgspec.json.decode(d)["ok"] for _, d in messages]
    assert len(pages.join(parts)) == MANY


def test_a_client_that_reads_one_message_gets_too_large_not_silence(many: NodeProcess) -> None:
    [(_, data)] = _raw(many, "tasks", {"list": "bulk"})
    error = msgspec.json.decode(data)["error"]
    assert error["code"] == "too_large" and '"paged": true' in error["message"]
    assert "\n" not in error["message"]
    small = msgspec.json.decode(_raw(many, "tasks", {"limit": 10})[0][1])
    assert [r["title"] for r in small["ok"]] == [f"task {i}" for i in range(10)]


def test_pages_after_a_task_cover_the_listing_without_gaps_or_repeats(many: NodeProcess) -> None:
    client = NodeClient(many.home)
    seen: list[str] = []
    after: str | None = None
    while True:
        payload: dict[str, Any] = {"list": "bulk", "limit": 700}
        if after:
            payload["after"] = after
        page = client.request("tasks", payload)
        seen += [r["title"] for r in page]
        if len(page) < 700:
            break
        after = page[-1]["id"]
    assert seen == [f"task {i}" for i in range(MANY)]


def test_limit_and_offset_still_cut_the_listing(many: NodeProcess) -> None:
    rows = many.ok("tasks", "--list", "bulk", "--offset", "1500", "--limit", "1200")
    assert [r["title"] for r in rows] == [f"task {i}" for i in range(1500, 2700)]


def test_sql_and_audit_stream_as_many_rows_as_asked(many: NodeProcess) -> None:
    query = "select t.title, t.description from tasks t join lists l on l.id = t.list_id"
    rows = many.ok("sql", f"{query} where l.name = 'bulk' order by t.created_at, t.id")
    assert len(rows) == MANY and rows[-1]["title"] == f"task {MANY - 1}"
    human = many.cli("sql", f"{query} where l.name = 'bulk'", "--max-rows", "0")
    assert human.code == 0 and human.out.endswith(f"{MANY} rows\n")
    assert len(human.out.splitlines()) == MANY + 3
    capped = many.cli("sql", f"{query} where l.name = 'bulk'")
    assert capped.out.endswith(f"(showing 1000 of {MANY} rows; --max-rows or --json for all)\n")
    assert len(many.ok("sql", "select * from events where seq <= 4001")) == MANY + 1


def test_a_task_larger_than_a_message_is_shown_whole(many: NodeProcess) -> None:
    big = "\U0001f600" * 100_000  # 400 kB of UTF-8
    client = NodeClient(many.home)
    task = client.request("task.add", {"list": "other", "title": "big", "description": big})
    client.request("task.edit", {"task": task["id"], "system_prompt": big})
    client.request("task.subtask.add", {"task": task["id"], "titles": ["s" * 500] * 1000})
    messages = _raw(many, "task.show", {"task": task["id"], "paged": True})
    assert len(messages) >= 2 and all(len(h) + len(d) <= MAX_PAYLOAD for h, d in messages)
    shown = many.ok("task", "show", task["id"])
    assert shown["description"] == shown["system_prompt"] == big
    assert len(shown["subtasks"]) == 1000
    human = many.cli("task", "show", task["id"])
    assert human.code == 0 and "big" in human.out
    assert [t["id"] for t in many.ok("tasks", "--list", "other")] == [task["id"]]


def test_an_audit_of_more_events_than_a_page_is_complete(many: NodeProcess) -> None:
    task_id = ev.new_aggregate_id()
    list_id = many.ok("list", "ls")[1]["id"]
    envelopes = [ev.envelop(ev.TaskCreated(list_id=list_id, title="busy"), task_id, ORIGIN)]
    envelopes += [
        ev.envelop(
            ev.SubtaskAdded(subtask_id=ev.new_aggregate_id(), title=f"s{i}"), task_id, ORIGIN
        )
        for i in range(2 * pages.PAGE_ROWS + 10)
    ]
    publish(many, envelopes)
    wait_for_projection(many)
    audit = many.ok("audit", task_id)
    assert len(audit) == len(envelopes)
    assert [e["seq"] for e in audit] == sorted(e["seq"] for e in audit)
    assert [e["payload"].get("title") for e in audit[1:]] == [
        f"s{i}" for i in range(len(audit) - 1)
    ]


def test_the_cli_prints_a_listing_before_it_has_read_all_of_it(many: NodeProcess) -> None:
    counter = Counter(many, "claudedo.api.page.>")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "claudedo_actors", "tasks", "--list", "bulk"],
            env=many.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        asked_before = counter.sync()  # the CLI is held by its full stdout meanwhile
        rest = proc.stdout.read()
        assert proc.wait(60) == 0
        asked_after = counter.sync()
    finally:
        counter.close()
    assert first.startswith("id ") and rest.endswith(f"{MANY} tasks\n")
    assert asked_after > asked_before  # pages were asked for after the first line was out


@pytest.mark.parametrize("args", [("tasks",), ("tasks", "--json"), ("sql", "select * from tasks")])
def test_a_closed_stdout_ends_the_cli_quietly(many: NodeProcess, args: tuple[str, ...]) -> None:
    command = " ".join([sys.executable, "-m", "claudedo_actors", *(f"'{a}'" for a in args)])
    res = subprocess.run(
        ["bash", "-c", f"{command} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}"],
        env=many.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.stderr == "" and res.stdout == "141\n", (res.stdout, res.stderr)
    assert many.ok("info")["node_id"]


def test_a_paged_reply_nobody_asks_for_is_dropped_and_says_so(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", env={"CLAUDEDO_PAGE_IDLE_S": "0.2"}).start()
    try:
        add_tasks(node, 3000, description=lambda i: "d" * 400)
        conn = WireConnection(home_url(node.home, "operator"), 30)
        try:
            conn.send(b"SUB _INBOX.operator.idle 1\r\n")
            conn.pub("claudedo.api.tasks", "_INBOX.operator.idle", b'{"paged": true}')
            frames = conn.frames()
            headers = next(frames)[2].decode()
            following = next(
                line.split(":", 1)[1].strip()
                for line in headers.split("\r\n")
                if line.startswith(pages.NEXT + ":")
            )

            def dropped() -> dict[str, Any] | None:
                conn.pub(following, "_INBOX.operator.idle", b"")
                reply: dict[str, Any] = msgspec.json.decode(next(frames)[3])
                return reply if "error" in reply else None

            error = wait_until(dropped, 30, "the unread reply to be dropped")["error"]
        finally:
            conn.close()
        assert error["code"] == "not_found" and "no longer held" in error["message"]
        assert len(node.ok("tasks")) == 3000  # the node goes on serving
    finally:
        node.stop()


@pytest.mark.slow
def test_listings_work_at_100k_tasks(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home").start()
    try:
        add_tasks(node, 100_000, description=lambda i: "d" * 100)
        res = node.cli("tasks", "--json", timeout_s=600)
        assert res.code == 0 and len(json.loads(res.out)) == 100_000
        human = node.cli("tasks", timeout_s=600)
        assert human.code == 0 and human.out.endswith("100000 tasks\n")
        rows = node.ok("sql", "select id from tasks")
        assert len(rows) == 100_000
        task_id = rows[0]["id"]
        assert [e["type"] for e in node.ok("audit", task_id)] == ["TaskCreated"]
        assert node.ok("runs", task_id) == []
        assert node.cli("sql", "select * from tasks", timeout_s=600).out.endswith("100000 rows\n")
    finally:
        node.stop()


_ROWS = st.lists(
    st.dictionaries(st.text(max_size=5), st.text(max_size=300), max_size=4), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(pages_=st.lists(_ROWS, max_size=5), budget=st.integers(64, 4096), sql=st.booleans())
def test_a_reply_cut_into_messages_joins_back_to_itself(
    pages_: list[list[dict[str, str]]], budget: int, sql: bool
) -> None:
    columns = ["a", "b"] if sql else None

    async def cut() -> list[pages.Message]:
        async def read() -> AsyncIterator[list[Any]]:
            for page in pages_:
                yield page

        return [m async for m in pages.messages(pages.Pages(read(), columns), budget)]

    messages = asyncio.run(cut())
    assert all(len(m.payload) <= budget for m in messages)
    documents, chunks = [], []
    for message in messages:
        chunks.append(message.payload)
        if not message.continued:
            documents.append(msgspec.json.decode(b"".join(chunks))["ok"])
            chunks = []
    assert not messages[-1].continued
    rows = [row for page in pages_ for row in page]
    assert pages.join(documents) == ({"columns": columns, "rows": rows} if sql else rows)
