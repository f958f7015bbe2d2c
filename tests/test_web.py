"""The board over HTTP, served by a real node: nothing without the home's token, the board
and task pages, and every action through the node's API with the CLI's errors."""

from __future__ import annotations

import html as html_text
import http.cookiejar
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api_support import make_repo
from tests.conftest import NodeProcess, wait_until
from tests.runner_support import Runner


class Browser:
    """A plain HTTP client with a cookie jar, as a browser keeps the login cookie."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self._send(urllib.request.Request(self.url + path, headers=headers or {}))

    def post(
        self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        return self._send(urllib.request.Request(self.url + path, data, headers or {}))

    def _send(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def _written(node: NodeProcess) -> int:
    """Events written by anyone but the node's checkpointer (which signs the log now and
    then, whatever the test does)."""
    rows = node.ok("sql", "select count(*) as n from events where aggregate <> 'log'")
    return int(rows[0]["n"])


def _token(node: NodeProcess) -> str:
    return (node.home / "web-token").read_text().strip()


def _column(html: str, status: str) -> str:
    start = html.index(f'data-status="{status}"')
    end = html.find("</section>", start)
    return html[start:end]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Browser]]:
    node = NodeProcess(tmp_path_factory.mktemp("web") / "home").start()
    try:
        browser = Browser(node.ok("info")["web_url"])
        status, _ = browser.get(f"/login?token={_token(node)}")
        assert status == 200
        yield node, browser
    finally:
        node.stop()


def test_nothing_is_served_without_the_homes_token(
    board: tuple[NodeProcess, Browser], tmp_path: Path
) -> None:
    node, logged_in = board
    stranger = Browser(logged_in.url)
    assert stranger.get("/")[0] == 401
    assert stranger.get("/login?token=wrong")[0] == 403
    assert stranger.get("/", {"Authorization": "Bearer " + "x" * 43})[0] == 401
    before = _written(node)
    status, text = stranger.post("/lists", {"name": "intruder"})
    assert status == 401 and "claudedo open" in text
    assert _written(node) == before
    # A program may send the token as a bearer token instead of the cookie.
    assert stranger.get("/", {"Authorization": f"Bearer {_token(node)}"})[0] == 200


def test_the_board_shows_tasks_in_columns_with_their_list_and_text_literally(
    board: tuple[NodeProcess, Browser],
) -> None:
    node, browser = board
    node.ok("list", "add", "columns")
    node.ok("task", "add", "columns", "<script>alert(1)</script> draft")
    node.ok("task", "add", "columns", "queued one", "--queue")
    status, html = browser.get("/")
    assert status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; draft" in _column(html, "draft")
    assert "<script>alert" not in html
    assert "queued one" in _column(html, "queued") and "columns" in _column(html, "queued")


def test_a_list_and_a_task_made_in_the_page_are_the_nodes(
    board: tuple[NodeProcess, Browser],
) -> None:
    node, browser = board
    status, html = browser.post("/lists", {"name": "from-the-page"})
    assert status == 200 and "from-the-page" in html
    (row,) = [r for r in node.ok("list", "ls") if r["name"] == "from-the-page"]
    fields = {"list": row["id"], "title": "made in the page", "description": "d",
              "subtasks": "one\ntwo", "queue": "on"}  # fmt: skip
    status, html = browser.post("/tasks", fields)
    assert status == 200 and "made in the page" in _column(html, "queued")
    (task,) = [t for t in node.ok("tasks") if t["title"] == "made in the page"]
    shown = node.ok("task", "show", task["id"])
    assert [s["title"] for s in shown["subtasks"]] == ["one", "two"]
    assert node.ok("audit", task["id"])[0]["actor"].startswith("user:")


def test_a_refused_action_shows_the_clis_error_and_changes_nothing(
    board: tuple[NodeProcess, Browser],
) -> None:
    node, browser = board
    node.ok("list", "add", "refusals")
    before = _written(node)
    cli = node.cli("task", "add", "refusals", "")
    assert cli.code != 0
    status, html = browser.post("/tasks", {"list": "refusals", "title": ""})
    assert status == 400
    assert cli.err.strip() in html  # the same one line: "error: ..."
    status, html = browser.post("/tasks", {"list": "no-such-list", "title": "t"})
    assert status == 400 and "error: list no-such-list not found" in html
    assert _written(node) == before


def test_queue_unqueue_and_cancel_from_the_board(board: tuple[NodeProcess, Browser]) -> None:
    node, browser = board
    node.ok("list", "add", "actions")
    task = node.ok("task", "add", "actions", "acted on")["id"]
    assert browser.post(f"/tasks/{task}/queue", {})[0] == 200
    assert node.ok("task", "show", task)["status"] == "queued"
    assert browser.post(f"/tasks/{task}/unqueue", {})[0] == 200
    assert node.ok("task", "show", task)["status"] == "draft"
    browser.post(f"/tasks/{task}/queue", {})
    assert browser.post(f"/tasks/{task}/cancel", {})[0] == 200
    assert node.ok("task", "show", task)["status"] == "cancelled"
    status, html = browser.post(f"/tasks/{task}/unqueue", {})
    assert status == 400 and "error: " in html


def test_a_post_from_another_site_is_refused(board: tuple[NodeProcess, Browser]) -> None:
    node, browser = board
    before = _written(node)
    status, _ = browser.post("/lists", {"name": "csrf"}, {"Origin": "http://evil.example"})
    assert status == 403 and _written(node) == before


def test_a_task_page_shows_its_runs_and_worktree(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SCENARIO": "write"}).start()
    try:
        runner.add_list(make_repo(tmp_path / "repo"))
        task = runner.add_task("Run me", description="Make <it> so")
        done = runner.wait_status(task)
        browser = Browser(runner.node.ok("info")["web_url"])
        browser.get(f"/login?token={_token(runner.node)}")
        status, html = browser.get(f"/tasks/{task[:8]}")
        assert status == 200 and "Make &lt;it&gt; so" in html
        assert "succeeded" in html and f"{done['runs'][0]['cost_usd']:.4f}" in html
        assert "1 commit(s)" in html
        assert browser.get("/tasks/zzzzzzzz")[0] == 404
    finally:
        runner.stop()


def test_a_node_started_with_no_web_serves_no_board(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home", ["--no-web"]).start()
    try:
        assert node.ok("info")["web_url"] is None
        res = node.cli("open")
        assert res.code == 1 and res.err == "error: this node serves no board (it was started " \
            "with --no-web)\n"  # fmt: skip
    finally:
        node.stop()


def test_a_bad_web_address_is_one_line(tmp_path: Path) -> None:
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "up", "--web", "nowhere"],
        env={"CLAUDEDO_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: --web 'nowhere': give HOST:PORT, e.g. 127.0.0.1:8080"
    ]


def test_open_prints_the_login_link(board: tuple[NodeProcess, Browser]) -> None:
    node, browser = board
    link = node.cli("open", "--print").out.strip()
    assert link == f"{browser.url}/login?token={_token(node)}"
    fresh = Browser(browser.url)
    assert fresh.get(link.removeprefix(browser.url))[0] == 200


class EventStream:
    """A page's Server-Sent Events stream, read line by line."""

    def __init__(self, browser: Browser, last_event_id: int | None = None) -> None:
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        request = urllib.request.Request(browser.url + "/events", headers=headers)
        self.response = browser.opener.open(request, timeout=30)

    def next_change(self) -> int:
        """The id of the next `changed` event (the read fails after 30 s without one)."""
        seen: dict[str, str] = {}
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if not line:
                if seen.get("event") == "changed":
                    return int(seen["id"])
                seen = {}
                continue
            if not line.startswith(":"):
                key, _, value = line.partition(": ")
                seen[key] = value

    def close(self) -> None:
        self.response.close()


def test_a_page_is_told_when_the_projection_moves_on(board: tuple[NodeProcess, Browser]) -> None:
    node, browser = board
    now = node.ok("info")["checkpoint_seq"]
    stream = EventStream(browser, last_event_id=now)
    try:
        node.ok("list", "add", "live")
        after = node.ok("info")["checkpoint_seq"]
        # The first event is about the change, not a stale one for what the page had seen.
        assert stream.next_change() == after > now
    finally:
        stream.close()


def test_a_page_that_reconnects_is_told_at_once_what_it_missed(
    board: tuple[NodeProcess, Browser],
) -> None:
    node, browser = board
    node.ok("list", "add", "missed")
    now = node.ok("info")["checkpoint_seq"]
    stream = EventStream(browser, last_event_id=1)
    try:
        assert stream.next_change() == now
    finally:
        stream.close()
    assert Browser(browser.url).get("/events")[0] == 401


def test_a_fragment_is_what_the_page_shows_live(board: tuple[NodeProcess, Browser]) -> None:
    _, browser = board
    status, html = browser.get("/?fragment=1")
    assert status == 200 and "<html" not in html and 'data-status="draft"' in html
    status, page = browser.get("/")
    assert 'id="live"' in page and 'new EventSource("/events")' in page


def test_open_event_streams_do_not_keep_the_node_from_stopping(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home").start()
    browser = Browser(node.ok("info")["web_url"])
    browser.get(f"/login?token={_token(node)}")
    streams = [EventStream(browser) for _ in range(3)]
    try:
        assert node.stop() == 0
    finally:
        for stream in streams:
            stream.close()


def test_after_a_restart_the_board_is_where_the_open_pages_look_for_it(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home").start()
    try:
        url = node.ok("info")["web_url"]
        browser = Browser(url)
        browser.get(f"/login?token={_token(node)}")
        seen = node.ok("info")["checkpoint_seq"]
        node.stop()
        node.start()
        assert node.ok("info")["web_url"] == url  # the same port again
        node.ok("list", "add", "after-restart")
        # The page's cookie still opens it, and its stream resumes from the id it saw.
        stream = EventStream(browser, last_event_id=seen)
        try:
            assert stream.next_change() == node.ok("info")["checkpoint_seq"] > seen
        finally:
            stream.close()
    finally:
        node.stop()


def test_review_and_continue_from_the_task_page(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SCENARIO": "write"}).start()
    try:
        runner.add_list(make_repo(tmp_path / "repo"))
        merged, discarded = runner.add_task("Merge me"), runner.add_task("Discard me")
        runner.wait_status(merged), runner.wait_status(discarded)
        browser = Browser(runner.node.ok("info")["web_url"])
        browser.get(f"/login?token={_token(runner.node)}")
        # The diff, per file, with its added lines.
        status, html = browser.get(f"/tasks/{merged}/diff")
        assert status == 200 and 'data-file="fake.txt"' in html
        assert '<span class="l add">+written by the fake agent</span>' in html
        # Merge and discard, as the CLI would; merging what was discarded is refused, with
        # the CLI's error, and changes nothing.
        assert browser.post(f"/tasks/{merged}/merge", {})[0] == 200
        assert runner.task(merged)["worktree"]["status"] == "merged"
        assert browser.post(f"/tasks/{discarded}/discard", {})[0] == 200
        assert runner.task(discarded)["worktree"]["status"] == "discarded"
        before = _written(runner.node)
        cli = runner.node.cli("worktree", "merge", discarded)
        status, html = browser.post(f"/tasks/{discarded}/merge", {})
        assert status == 400 and cli.code != 0 and cli.err.strip() in html
        assert _written(runner.node) == before
        # Continue with a follow-up prompt: a second run; an empty prompt is refused.
        status, html = browser.post(f"/tasks/{merged}/continue", {"prompt": ""})
        assert status == 400 and "error: " in html
        assert len(runner.task(merged)["runs"]) == 1
    finally:
        runner.stop()


def test_continue_from_the_task_page_runs_again(tmp_path: Path) -> None:
    runner = Runner(tmp_path, slots=1).start()
    try:
        runner.add_list(make_repo(tmp_path / "repo"))
        task = runner.add_task("Again")
        runner.wait_status(task)
        browser = Browser(runner.node.ok("info")["web_url"])
        browser.get(f"/login?token={_token(runner.node)}")
        assert browser.post(f"/tasks/{task}/continue", {"prompt": "And more"})[0] == 200
        runner.wait_run(task, 2)
        assert runner.wait_status(task)["runs"][1]["is_continue"] is True
    finally:
        runner.stop()


def test_the_task_page_renders_the_runs_output_timeline_settings_and_header(
    tmp_path: Path,
) -> None:
    runner = Runner(tmp_path, slots=1, env={"FAKE_CLAUDE_SCENARIO": "write"}).start()
    try:
        runner.add_list(make_repo(tmp_path / "repo"))
        browser = Browser(runner.node.ok("info")["web_url"])
        browser.get(f"/login?token={_token(runner.node)}")
        # A task made in the page with settings; the form's numbers become the API's.
        fields = {"list": "demo", "title": "Readable", "queue": "on", "max_turns": "7",
                  "model": "claude-test"}  # fmt: skip
        assert browser.post("/tasks", fields)[0] == 200
        (task,) = [t for t in runner.node.ok("tasks") if t["title"] == "Readable"]
        done = runner.wait_status(task["id"])
        assert (done["max_turns"], done["model"]) == (7, "claude-test")
        status, html = browser.get(f"/tasks/{task['id']}")
        assert status == 200
        # The output: the agent's words, its tool call and result folded, the run's result.
        assert '<div class="said">Done. The change is in place.</div>' in html
        assert "<summary>→ Write NOTES.md</summary>" in html
        assert "← tool result: File created successfully" in html
        assert "= succeeded: 2 turns" in html
        assert "max_turns=7" in html and "model=claude-test" in html
        # The raw NDJSON, one click away, is the run's file.
        status, raw = browser.get(f"/tasks/{task['id']}/runs/1/log")
        log_file = runner.node.home / "logs" / f"{task['id']}_run1.ndjson"
        assert status == 200 and raw == log_file.read_text()
        assert browser.get(f"/tasks/{task['id']}/runs/9/log")[0] == 404
        # The audit timeline, as `claudedo audit` tells it, with the totals.
        cli, text = runner.node.cli("audit", task["id"]), html_text.unescape(html)
        assert 'created "Readable"' in text and "run 1 succeeded" in text
        assert cli.out.strip().splitlines()[-1] in text
        # The header: slots, running, cost today, NATS.
        assert "1 slot</span>" in html and "0 running" in html and "NATS ok" in html
        assert f"${done['runs'][0]['cost_usd']:.4f} today" in html
    finally:
        runner.stop()


def test_edit_and_sub_tasks_from_the_task_page(board: tuple[NodeProcess, Browser]) -> None:
    node, browser = board
    node.ok("list", "add", "editing")
    task = node.ok("task", "add", "editing", "before", "--subtask", "first")["id"]
    fields = {"title": "after", "description": "now described", "max_turns": "3",
              "model": ""}  # fmt: skip
    assert browser.post(f"/tasks/{task}/edit", fields)[0] == 200
    shown = node.ok("task", "show", task)
    assert (shown["title"], shown["description"], shown["max_turns"]) == (
        "after", "now described", 3,
    )  # fmt: skip
    # Clearing a setting sends null; an unchanged form sends nothing.
    before = _written(node)
    fields = {"title": "after", "description": "now described", "max_turns": "3"}
    assert browser.post(f"/tasks/{task}/edit", fields)[0] == 200
    assert _written(node) == before
    assert browser.post(f"/tasks/{task}/edit", {"max_turns": ""})[0] == 200
    assert node.ok("task", "show", task)["max_turns"] is None
    # A bad value is the API's refusal, and nothing changes.
    before = _written(node)
    status, html = browser.post(f"/tasks/{task}/edit", {"max_turns": "0"})
    assert status == 400 and "error: " in html and "max_turns" in html
    assert _written(node) == before
    # Sub-tasks: add, tick, untick; a missing one is the CLI's error.
    assert browser.post(f"/tasks/{task}/subtasks", {"titles": "second\n\nthird"})[0] == 200
    assert browser.post(f"/tasks/{task}/subtasks/2/done", {})[0] == 200
    subs = node.ok("task", "show", task)["subtasks"]
    assert [(s["title"], s["done"]) for s in subs] == [
        ("first", False), ("second", True), ("third", False),
    ]  # fmt: skip
    assert browser.post(f"/tasks/{task}/subtasks/2/undo", {})[0] == 200
    assert not node.ok("task", "show", task)["subtasks"][1]["done"]
    cli = node.cli("task", "subtask", "done", task, "9")
    status, html = browser.post(f"/tasks/{task}/subtasks/9/done", {})
    assert status == 400 and cli.code != 0 and cli.err.strip() in html


def test_a_column_shows_its_first_cards_and_how_many_more(
    board: tuple[NodeProcess, Browser],
) -> None:
    node, browser = board
    node.ok("list", "add", "paging")
    for n in range(3):
        node.ok("task", "add", "paging", f"paged {n}")
    status, html = browser.get("/?cards=1")
    drafts = _column(html, "draft")
    assert status == 200 and drafts.count('class="card"') == 1 and "more…" in drafts
    counts = node.ok("watch", "--once")["counts"]
    assert f"draft ({counts['draft']})" in drafts


def test_a_running_runs_output_streams_in_line_by_line(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = {"FAKE_CLAUDE_SCENARIO": "gated", "FAKE_CLAUDE_GATE": str(gate)}
    runner = Runner(tmp_path, slots=1, env=env).start()
    try:
        runner.add_list(make_repo(tmp_path / "repo"))
        task = runner.add_task("Streaming")
        log_file = runner.node.home / "logs" / f"{task}_run1.ndjson"
        wait_until(
            lambda: log_file.is_file() and len(log_file.read_bytes().splitlines()) >= 2,
            30, "the run's first lines",
        )  # fmt: skip
        browser = Browser(runner.node.ok("info")["web_url"])
        browser.get(f"/login?token={_token(runner.node)}")
        status, html = browser.get(f"/tasks/{task}")
        # What the run said so far is on the page; the rest is to come by the stream.
        assert status == 200 and 'data-live="1"' in html and 'data-count="2"' in html
        assert "<summary>→ Write NOTES.md</summary>" in html
        request = urllib.request.Request(
            f"{browser.url}/tasks/{task}/runs/1/stream", headers={"Last-Event-ID": "1"}
        )
        with browser.opener.open(request, timeout=30) as stream:
            events = _sse(stream, until_first="line")
            # The second line again (the page said it had one), then the rest once the
            # agent goes on.
            assert events[-1][0] == ("line", "2") and "→ Write NOTES.md" in events[-1][1]
            gate.touch()
            events = _sse(stream, until_first="end")
        lines = [(kind, data) for (kind, _), data in events if kind == "line"]
        assert [ident for (kind, ident), _ in events if kind == "line"] == ["3", "4", "5"]
        assert "← tool result: File created" in lines[0][1]
        assert "Done. The change is in place." in lines[1][1]
        assert "= succeeded" in lines[2][1]
        runner.wait_status(task)
    finally:
        gate.touch()
        runner.stop()


def _sse(stream: Any, until_first: str) -> list[tuple[tuple[str, str], str]]:
    """Server-Sent Events read off `stream` up to the first of kind `until_first`:
    ((event, id), data) each."""
    got: list[tuple[tuple[str, str], str]] = []
    kind, ident, data = "message", "", []
    for raw in stream:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: ") or line == "data:":
            data.append(line[6:])
        elif line == "" and (data or kind != "message"):
            got.append(((kind, ident), "\n".join(data)))
            if kind == until_first:
                return got
            kind, data = "message", []
    return got
