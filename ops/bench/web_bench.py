"""The board's figures (issue 16): its first page with 10,000 tasks in the store, an event to
the change on screen under the 500-task load, and the node's CPU per task with the board open.

Each figure stands next to its raw baseline, measured in the same run: the page next to the
API request it is made of and an HTTP request refused before any work (the server's floor);
the screen next to a plain NATS subscriber getting the same events; the node's CPU with the
board open next to the same load with no page open.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import shutil
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import runner_bench
from runner_bench import Report

# Records, in the page, when each task's card first shows in the done column.
_OBSERVER = """() => {
  window.seen = {};
  const mark = () => {
    document.querySelectorAll('section[data-status="done"] .card').forEach((c) => {
      if (!(c.dataset.task in window.seen)) window.seen[c.dataset.task] = Date.now();
    });
  };
  document.querySelectorAll('section[data-status="done"] .card')
    .forEach((c) => { window.seen[c.dataset.task] = -1; });
  new MutationObserver(mark).observe(document.getElementById("live"),
                                     {childList: true, subtree: true});
}"""


def bench_web(
    report: Report,
    nats_server: Callable[[], Any],
    load_store: Callable[[str, int], Any],
    store_tasks: int,
    load: int,
    slots: int,
    rounds: int,
) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-web-"))
    with nats_server() as url:
        last = asyncio.run(load_store(url, store_tasks))
        with runner_bench._node(base, slots, runner_bench.FAKE, url) as (client, proc):
            while client.request("info", {})["checkpoint_seq"] < last:
                time.sleep(0.05)  # the node building its projection from the log
            web = urllib.parse.urlsplit(client.request("info", {})["web_url"])
            token = (client.home.root / "web-token").read_text().strip()
            _first_page(report, client, web, token, store_tasks, rounds)
            repo = runner_bench._repo(base / "load")
            list_id = client.request("list.add", {"name": "load", "dir": str(repo)})["id"]
            closed = _load(client, proc, list_id, load, None)
            report(
                f"node CPU per task, no page open ({load} instant tasks, {slots} slots, "
                f"{store_tasks:,} tasks in the store)",
                node_cpu_ms_per_task=closed["cpu_ms_per_task"],
                tasks_per_s=closed["tasks_per_s"],
            )
            opened = _load(client, proc, list_id, load, (web, token))
            report(
                "node CPU per task, the board open in chromium (same load, same node)",
                node_cpu_ms_per_task=opened["cpu_ms_per_task"],
                tasks_per_s=opened["tasks_per_s"],
                page_fetches=opened["fetches"],
            )
            screen, nats = opened["screen_ms"], opened["nats_ms"]
            report(
                "an event to the change on screen (TaskCompleted to its card in the done "
                "column of an open board)",
                p50_ms=statistics.median(screen),
                p95_ms=runner_bench._pct(screen, 95),
                max_ms=max(screen),
                seen=f"{len(screen)} of {load}",
            )
            report(
                "baseline: the same events to a plain NATS subscriber",
                p50_ms=statistics.median(nats),
                p95_ms=runner_bench._pct(nats, 95),
                max_ms=max(nats),
                seen=f"{len(nats)} of {load}",
            )
    shutil.rmtree(base, ignore_errors=True)


def _first_page(
    report: Report, client: Any, web: Any, token: str, store_tasks: int, rounds: int
) -> None:
    """Every way of asking, alternating in one loop, so a slow moment hits them all."""
    conn = http.client.HTTPConnection(web.hostname, web.port, timeout=30)
    auth = {"Authorization": f"Bearer {token}"}

    def get(path: str, headers: dict[str, str]) -> int:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    assert get("/", auth) == 200 and get("/", {}) == 401
    ways: dict[str, Callable[[], Any]] = {
        f"the board's first page, GET / ({store_tasks:,} tasks in the store)": lambda: get(
            "/", auth
        ),
        "the board's live part, GET /?fragment=1": lambda: get("/?fragment=1", auth),
        "baseline: the API requests it is made of, over NATS (board with 50 cards a column, "
        "list.ls)": lambda: (
            client.request("board", {"cards": 50}),
            client.request("list.ls", {}),
        ),
        "baseline: GET / without the token (refused before any work: the HTTP floor)": lambda: get(
            "/", {}
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    conn.close()
    for name, values in times.items():
        report(
            name,
            p50_ms=statistics.median(values),
            p95_ms=runner_bench._pct(values, 95),
            runs=len(values),
        )


def _load(
    client: Any, proc: Any, list_id: str, n: int, board: tuple[Any, str] | None
) -> dict[str, Any]:
    """`n` instant tasks queued as `bench.py tasks` queues them; with `board`, a chromium
    page on it all along, recording when each task's card shows as done."""
    ids = [client.request("task.add", {"list": list_id, "title": f"w{i}"})["id"] for i in range(n)]
    ended = runner_bench._Ended(client)
    completed = _Arrivals(client)
    with _page(board) as page:
        cpu0 = runner_bench._cpu_s(proc)
        t = time.perf_counter()
        for start in range(0, n, 50):
            client.request("task.queue", {"tasks": ids[start : start + 50]})
        ended.wait(n)
        elapsed = time.perf_counter() - t
        cpu = runner_bench._cpu_s(proc) - cpu0
        seen: dict[str, int] = {}
        fetches = 0
        if page is not None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the page catching up on the last events
                seen = page.evaluate("() => window.seen")
                if all(i in seen for i in ids):
                    break
                time.sleep(0.1)  # polling the bench's own page, not the node
            fetches = page.evaluate("() => window.fetches || 0")
    ended.close()
    completed.close()
    occurred = _completed_at(client, ids)
    screen = [seen[i] - occurred[i] for i in ids if seen.get(i, -1) > 0 and i in occurred]
    nats = [completed.at[i] - occurred[i] for i in ids if i in completed.at and i in occurred]
    return {
        "cpu_ms_per_task": cpu * 1000 / n,
        "tasks_per_s": n / elapsed,
        "screen_ms": screen,
        "nats_ms": nats,
        "fetches": fetches,
    }


@contextlib.contextmanager
def _page(board: tuple[Any, str] | None) -> Iterator[Any]:
    if board is None:
        yield None
        return
    from playwright.sync_api import sync_playwright

    web, token = board
    chromium = shutil.which("chromium") or "chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"http://{web.netloc}/login?token={token}")
        # Count the page's fetches of its live part (what an open board costs the node).
        page.evaluate(
            """() => { window.fetches = 0; const f = window.fetch;
                       window.fetch = (...a) => { window.fetches += 1; return f(...a); }; }"""
        )
        page.evaluate(_OBSERVER)
        try:
            yield page
        finally:
            browser.close()


class _Arrivals(runner_bench._Ended):
    """When each TaskCompleted reached a plain NATS subscriber (ms since the epoch)."""

    def __init__(self, client: Any) -> None:
        self.at: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(client)

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for subject, _, _, _ in self._conn.frames():
                _, _, _, task_id, kind = subject.split(b".")
                if kind == b"TaskCompleted":
                    self.at.setdefault(task_id.decode(), int(time.time() * 1000))


def _completed_at(client: Any, ids: list[str]) -> dict[str, int]:
    """When each task's TaskCompleted happened, by the node's clock (the same machine's)."""
    listed = ", ".join(f"'{i}'" for i in ids if i.replace("-", "").isalnum())
    query = (
        "select aggregate_id, occurred_at from events "
        f"where type = 'TaskCompleted' and aggregate_id in ({listed})"
    )
    rows = client.request("sql", {"query": query})["rows"]
    return {r[0]: int(datetime.fromisoformat(str(r[1])).timestamp() * 1000) for r in rows}


if __name__ == "__main__":  # pragma: no cover - run through bench.py
    print(json.dumps({"use": "python ops/bench/bench.py web"}))
