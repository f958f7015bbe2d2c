"""Benchmarks of running tasks: dispatch latency, throughput against the bare work, node RSS.

Each figure comes with its baseline from the same run: the bare work the same tasks need (git
worktree add, the fake agent, git status) at the same parallelism, and the spawn and worktree
costs on their own. Nodes are real (`claudedo up` in a child process), agents are real
processes: the fake agent of the tests, or for the RSS run a shell script that prints a
recorded transcript (the cheapest agent possible, so that 10k tasks take minutes, not hours).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fake_claude" / "claude"
HELLO = ROOT / "tests" / "fixtures" / "claude-code-2.1.197" / "hello.ndjson"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@x.invalid",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@x.invalid",
}
AGENT_ARGS = ["-p", "--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-6"]

Report = Callable[..., None]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("bench\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True, env=GIT_ENV)
    return repo


def _instant_agent(base: Path) -> Path:
    script = base / "instant-claude"
    script.write_text(f"#!/bin/sh\ncat {HELLO}\n")
    script.chmod(0o755)
    return script


@contextmanager
def _node(
    base: Path, slots: int, agent: Path, nats_url: str | None = None
) -> Iterator[tuple[Any, psutil.Process]]:
    """A node in a child process (`claudedo up`), on its embedded server or on `nats_url`."""
    from claudedo_actors.cli.client import NodeClient

    home = base / f"home-{slots}"
    env = {
        **os.environ,
        "CLAUDEDO_HOME": str(home),
        "CLAUDEDO_LOG_LEVEL": "WARNING",
        "FAKE_CLAUDE_HOME": str(base / "fake-claude-home"),
    }
    cmd = [sys.executable, "-m", "claudedo_actors", "up", "--slots", str(slots)]
    if nats_url is not None:
        cmd += ["--nats", nats_url]
    node = subprocess.Popen([*cmd, "--claude-bin", str(agent)], env=env)
    try:
        while not (home / "node.json").exists():
            if node.poll() is not None:
                raise RuntimeError("the node did not start")
            time.sleep(0.01)  # waiting for a child process to get ready
        yield NodeClient(home), psutil.Process(node.pid)
    finally:
        node.terminate()
        node.wait()


class _Ended:
    """Counts tasks that reached a terminal event, from a plain NATS subscription.

    A subscriber to the event subjects, as any program can be: waiting costs the node nothing
    (polling it with queries would load the node being measured).
    """

    _TERMINAL = (b"TaskCompleted", b"TaskFailed", b"TaskCancelled")

    def __init__(self, client: Any) -> None:
        from events.credentials import Credential
        from events.wire import WireConnection

        # A core subscription on event subjects: the node's role may (readers use consumers).
        creds = client.home.creds_dir / "node.json"
        login = Credential.read(creds) if creds.exists() else None
        self._conn = WireConnection(
            client.request("info", {})["nats_url"],
            3600,
            login.user if login else None,
            login.password if login else None,
        )
        self._conn.send(b"SUB claudedo.evt.task.*.* 1\r\n")
        self._ended: set[bytes] = set()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the connection closes with the node
            for subject, _, _, _ in self._conn.frames():
                _, _, _, task_id, kind = subject.split(b".")
                if kind in self._TERMINAL:
                    with self._cond:
                        self._ended.add(task_id)
                        self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self._ended)

    def wait(self, n: int, timeout_s: float = 3600) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._ended) >= n, timeout_s):
                raise TimeoutError(f"{len(self._ended)} of {n} tasks ended")

    def close(self) -> None:
        self._conn.close()


def _ms(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() * 1000


# --- dispatch latency --------------------------------------------------------------------------


def bench_dispatch(report: Report, n: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    repo = _repo(base)
    stages: dict[str, list[float]] = {
        "queued->claimed": [],
        "queued->run started": [],
        "queued->process spawned": [],
    }
    worktree_ms: list[float] = []
    with _node(base, 2, FAKE) as (client, _proc):
        list_id = client.request("list.add", {"name": "bench", "dir": str(repo)})["id"]
        ended = _Ended(client)
        for i in range(n):
            task = client.request("task.add", {"list": list_id, "title": f"t{i}"})
            client.request("task.queue", {"tasks": [task["id"]]})
            ended.wait(i + 1)
            at = {
                e["type"]: e["occurred_at"] for e in client.request("audit", {"task": task["id"]})
            }
            stages["queued->claimed"].append(_ms(at["TaskQueued"], at["TaskClaimed"]))
            stages["queued->run started"].append(_ms(at["TaskQueued"], at["RunStarted"]))
            stages["queued->process spawned"].append(_ms(at["TaskQueued"], at["RunProcessSpawned"]))
            worktree_ms.append(_ms(at["TaskClaimed"], at["TaskStarted"]))
    bare_worktree, bare_spawn = _bare_costs(base, repo, n)
    for name, values in stages.items():
        report(f"dispatch {name}", p50_ms=statistics.median(values), p99_ms=_pct(values, 99), n=n)
    report(
        "dispatch claim->started (worktree made in the slot)",
        p50_ms=statistics.median(worktree_ms),
        p99_ms=_pct(worktree_ms, 99),
    )
    report(
        "baseline git worktree add",
        p50_ms=statistics.median(bare_worktree),
        p99_ms=_pct(bare_worktree, 99),
    )
    report("baseline spawn of the fake agent (Popen)", p50_ms=statistics.median(bare_spawn))
    beyond = [
        s - w - statistics.median(bare_spawn)
        for s, w in zip(stages["queued->process spawned"], bare_worktree, strict=False)
    ]
    report(
        "dispatch beyond worktree and spawn",
        p50_ms=statistics.median(beyond),
        p99_ms=_pct(beyond, 99),
    )
    shutil.rmtree(base, ignore_errors=True)


def _bare_costs(base: Path, repo: Path, n: int) -> tuple[list[float], list[float]]:
    worktree, spawn = [], []
    for i in range(n):
        path = base / "bare" / f"w{i}"
        t = time.perf_counter()
        subprocess.run(
            ["git", "worktree", "add", "-q", "-b", f"bare{i}", str(path), "HEAD"],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip
        worktree.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        proc = subprocess.Popen(
            [str(FAKE), *AGENT_ARGS], cwd=path, stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "FAKE_CLAUDE_HOME": str(base / "fake-claude-home")},
        )  # fmt: skip
        spawn.append((time.perf_counter() - t) * 1000)
        proc.communicate(b"hello")
    return worktree, spawn


# --- throughput ----------------------------------------------------------------------------------


def bench_throughput(report: Report, n: int, slot_counts: list[int], repeat: int = 5) -> None:
    """ClaudeDo and the bare work, alternately, `repeat` times each; medians and their ratio.

    Alternating runs and taking medians keeps one slow moment of the machine from deciding the
    ratio (single runs here vary by about 10%). The machine's busy CPU seconds during each run
    show where the difference goes.
    """
    for slots in slot_counts:
        runs: dict[str, list[float]] = {"claudedo": [], "bare": [], "cpu": [], "bare_cpu": []}
        node_cpu: list[float] = []
        for _ in range(repeat):
            base = Path(tempfile.mkdtemp(prefix=f"bench-tasks-{slots}-"))
            wall, cpu, node = _claudedo_run(base, n, slots)
            runs["claudedo"].append(wall)
            runs["cpu"].append(cpu)
            node_cpu.append(node)
            cpu0 = _busy_cpu_s()
            runs["bare"].append(_bare_work(base, _repo(base / "bare-repo"), n, slots))
            runs["bare_cpu"].append(_busy_cpu_s() - cpu0)
            shutil.rmtree(base, ignore_errors=True)
        claudedo, bare = statistics.median(runs["claudedo"]), statistics.median(runs["bare"])
        report(
            f"{n} instant tasks, {slots} slots (median of {repeat})",
            claudedo_s=claudedo,
            bare_work_s=bare,
            ratio=claudedo / bare,
            tasks_per_s=n / claudedo,
            runs_claudedo_s=[round(x, 1) for x in runs["claudedo"]],
            runs_bare_s=[round(x, 1) for x in runs["bare"]],
            machine_cpu_s=statistics.median(runs["cpu"]),
            bare_machine_cpu_s=statistics.median(runs["bare_cpu"]),
            node_cpu_ms_per_task=statistics.median(node_cpu) * 1000 / n,
        )


def _claudedo_run(base: Path, n: int, slots: int) -> tuple[float, float, float]:
    """Wall seconds for n queued tasks to end, the machine's busy CPU seconds, the node's."""
    repo = _repo(base)
    with _node(base, slots, FAKE) as (client, proc):
        list_id = client.request("list.add", {"name": "bench", "dir": str(repo)})["id"]
        ids = [
            client.request("task.add", {"list": list_id, "title": f"t{i}"})["id"] for i in range(n)
        ]
        ended = _Ended(client)
        cpu0, node0 = _busy_cpu_s(), _cpu_s(proc)
        t = time.perf_counter()
        for start in range(0, n, 50):
            client.request("task.queue", {"tasks": ids[start : start + 50]})
        ended.wait(n)
        wall = time.perf_counter() - t
        cpu, node = _busy_cpu_s() - cpu0, _cpu_s(proc) - node0
        ended.close()
    return wall, cpu, node


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy so far (user, nice, system, irq, softirq)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def _bare_work(base: Path, repo: Path, n: int, parallel: int) -> float:
    """What the same tasks need without ClaudeDo: worktree, the agent, git status."""

    lock = threading.Lock()  # git refuses concurrent worktree adds; ClaudeDo takes turns too

    def one(i: int) -> None:
        path = base / "bare" / f"w{i}"
        with lock:
            subprocess.run(
                ["git", "worktree", "add", "-q", "-b", f"bare{i}", str(path), "HEAD"],
                cwd=repo, check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(
            [str(FAKE), *AGENT_ARGS], cwd=path, input=b"hello", capture_output=True, check=True,
            env={**os.environ, "FAKE_CLAUDE_HOME": str(base / "fake-claude-home")},
        )  # fmt: skip
        subprocess.run(["git", "status", "--porcelain"], cwd=path, check=True, capture_output=True)

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t


# --- memory ------------------------------------------------------------------------------------


def bench_rss(report: Report, targets: list[int]) -> None:
    """Node RSS after each number of finished tasks, with the part DuckDB reports as its own.

    DuckDB keeps blocks of the projection file in its buffer pool (bounded by its memory
    limit); the rest of the RSS is the node's own, which must not grow with finished tasks.
    """
    base = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    agent = _instant_agent(base)
    with _node(base, 4, agent) as (client, proc):
        list_id = client.request("list.add", {"name": "bench"})["id"]  # a sandbox list
        ended = _Ended(client)
        done = 0
        rss: dict[int, float] = {}
        duckdb_mib: dict[int, float] = {}
        t = time.perf_counter()
        for target in sorted(targets):
            while done < target:
                batch = min(200, target - done)
                for i in range(batch):
                    client.request("task.add", {"list": list_id, "title": f"t{done + i}"})
                ids = [
                    r["id"] for r in client.request("tasks", {"list": list_id, "status": "draft"})
                ]
                for start in range(0, len(ids), 100):
                    client.request("task.queue", {"tasks": ids[start : start + 100]})
                done += batch
                ended.wait(done)
            rss[target] = proc.memory_info().rss / 2**20
            query = "SELECT sum(memory_usage_bytes) FROM duckdb_memory()"
            duckdb_mib[target] = client.request("sql", {"query": query})["rows"][0][0] / 2**20
        elapsed = time.perf_counter() - t
        ended.close()
    first, last = min(targets), max(targets)
    report(
        "node RSS after finished tasks",
        **{f"after_{k}_MiB": v for k, v in rss.items()},
        **{f"duckdb_after_{k}_MiB": v for k, v in duckdb_mib.items()},
        growth_MiB=rss[last] - rss[first],
        growth_without_duckdb_MiB=(rss[last] - duckdb_mib[last]) - (rss[first] - duckdb_mib[first]),
        tasks_per_s=last / elapsed,
    )
    shutil.rmtree(base, ignore_errors=True)
