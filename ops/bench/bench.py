"""ClaudeDo benchmarks: event log, projector, CLI round trip, filtered query, running tasks.

Run from the repository root with the project's virtualenv:
    .venv/bin/python ops/bench/bench.py all            # everything (tens of minutes)
    .venv/bin/python ops/bench/bench.py log|projector|cli|query [--events N ...]
    .venv/bin/python ops/bench/bench.py sync          # appends/s, sync_interval always vs default
    .venv/bin/python ops/bench/bench.py audit         # audit verify of a chained, signed log
    .venv/bin/python ops/bench/bench.py analytics     # views, Parquet export, --as-of
    .venv/bin/python ops/bench/bench.py dispatch|tasks|rss   # running tasks (runner_bench.py)
Every figure is printed next to its raw baseline measured in the same run, on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec
import nats

import events as ev
from claudedo_actors.node.embedded_nats import EmbeddedNats
from events.log import STREAM, EventLog
from events.replay import replay
from projections.rebuild import rebuild_file
from projections.state import fold_list, fold_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runner_bench

ORIGIN = ev.Origin(node_id="bench", correlation_id="bench", actor="user:bench")
RESULTS: dict[str, Any] = {}


@contextmanager
def nats_server(sync_interval: str | None = None) -> Iterator[str]:
    """A fresh nats-server with JetStream, the same way a node starts its embedded one;
    `sync_interval` ("always", "2m") sets how often its store is fsynced."""
    store = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    config = None
    if sync_interval is not None:
        config = store / "sync.conf"
        config.write_text(f"jetstream {{ sync_interval: {sync_interval} }}\n")
    server = EmbeddedNats(store, store / "nats-server.pid", "claudedo-bench", config=config)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name: str, **fields: Any) -> None:
    RESULTS[name] = fields
    shown = ", ".join(
        f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
    )
    print(f"{name}: {shown}", flush=True)


# --- event log -----------------------------------------------------------------------------


def bench_log(n: int) -> None:
    with nats_server() as url:
        asyncio.run(_bench_log(url, n))


async def _reset(js: Any) -> EventLog:
    with suppress(Exception):
        await js.delete_stream(STREAM)
    log = EventLog(js)
    await log.ensure_stream()
    return log


def _payload(i: int) -> tuple[str, bytes, str]:
    env = ev.envelop(ev.TaskCreated(list_id="l", title=f"task {i}"), f"t{i}", ORIGIN)
    return env.subject, ev.encode(env), env.event_id


async def _bench_log(url: str, n: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    payloads = [_payload(i) for i in range(n)]

    await _reset(js)
    t = time.perf_counter()
    for subject, data, msg_id in payloads[: n // 4]:
        await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    report("raw js.publish (sync)", events_per_s=(n // 4) / (time.perf_counter() - t))

    await _reset(js)
    t = time.perf_counter()
    futures = []
    for subject, data, msg_id in payloads:
        futures.append(await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}))
        if len(futures) >= 4000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    raw_async = n / (time.perf_counter() - t)
    report("raw js.publish_async", events_per_s=raw_async)

    log = await _reset(js)
    envs = [
        ev.envelop(ev.TaskCreated(list_id="l", title=f"t{i}"), f"s{i}", ORIGIN)
        for i in range(n // 4)
    ]
    t = time.perf_counter()
    for env in envs:
        await log.append([env], expected_seq=0)
    report("EventLog.append sequential", events_per_s=len(envs) / (time.perf_counter() - t))

    for writers in (16, 64, 256):
        log = await _reset(js)
        envs = [
            ev.envelop(ev.TaskCreated(list_id="l", title=f"t{i}"), f"c{i}", ORIGIN)
            for i in range(n)
        ]

        async def writer(
            k: int, log: EventLog = log, envs: list[Any] = envs, w: int = writers
        ) -> None:
            for env in envs[k::w]:
                await log.append([env], expected_seq=0)

        t = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in range(writers)))
        rate = n / (time.perf_counter() - t)
        report(
            f"EventLog.append {writers} concurrent appenders",
            events_per_s=rate,
            vs_raw_async_pct=100 * rate / raw_async,
        )
    await nc.close()


def bench_sync(n: int, rounds: int = 3) -> None:
    """Appends/s with the store fsynced after every write (`sync_interval: always`) next to
    nats-server's default (every 2 minutes), alternating, `rounds` of each."""
    for mode in ("sequential", "64 concurrent"):
        rates: dict[str, list[float]] = {"default": [], "always": []}
        for _ in range(rounds):
            for sync in ("default", "always"):
                with nats_server(None if sync == "default" else "always") as url:
                    rates[sync].append(asyncio.run(_appends_per_s(url, n, mode)))
        for sync, values in rates.items():
            report(
                f"EventLog.append {mode}, sync_interval {sync}",
                events_per_s=statistics.median(values),
                runs=", ".join(f"{v:,.0f}" for v in values),
            )
        report(
            f"sync_interval always vs default, {mode}",
            pct=100 * statistics.median(rates["always"]) / statistics.median(rates["default"]),
        )


async def _appends_per_s(url: str, n: int, mode: str) -> float:
    nc = await nats.connect(url)
    try:
        log = await _reset(nc.jetstream())
        count = n // 4 if mode == "sequential" else n
        envs = [
            ev.envelop(ev.TaskCreated(list_id="l", title=f"t{i}"), f"y{i}", ORIGIN)
            for i in range(count)
        ]
        writers = 1 if mode == "sequential" else 64

        async def writer(k: int) -> None:
            for env in envs[k::writers]:
                await log.append([env], expected_seq=0)

        t = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in range(writers)))
        return count / (time.perf_counter() - t)
    finally:
        await nc.close()


# --- projector -----------------------------------------------------------------------------


def _lifecycle(i: int) -> list[ev.Envelope]:
    t = f"task-{i:08d}"
    return [
        ev.envelop(e, t, ORIGIN)
        for e in (
            ev.TaskCreated(
                list_id="l1",
                title=f"Task {i}",
                description="Make it so.",
                subtasks=(ev.Subtask(subtask_id=f"s{i}", title="step"),),
            ),
            ev.TaskQueued(),
            ev.TaskClaimed(node_id="bench", slot=i % 4),
            ev.TaskStarted(node_id="bench", slot=i % 4, workdir=f"/w/{t}"),
            ev.RunStarted(
                run_number=1, node_id="bench", slot=i % 4, workdir=f"/w/{t}", prompt=f"Task {i}"
            ),
            ev.RunFinished(
                run_number=1,
                success=True,
                result="done",
                turn_count=3,
                tokens_in=1200,
                tokens_out=300,
                cost_usd=0.012,
                line_count=40,
            ),
            ev.TaskCompleted(result="done"),
        )
    ]


async def _publish_all(url: str, messages: Iterable[tuple[str, bytes, str | None]]) -> int:
    """A fresh log holding `messages` (subject, stored bytes, Nats-Msg-Id or None), in order,
    published with up to 4,000 acks outstanding; its last sequence."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _reset(js)
    futures = []
    for subject, data, msg_id in messages:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        futures.append(await js.publish_async(subject, data, headers=headers))
        if len(futures) >= 4000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    last = await EventLog(js).last_seq()
    await nc.close()
    return int(last)


def _first(n: int, envelopes: Iterator[ev.Envelope]) -> Iterator[tuple[str, bytes, str | None]]:
    for env in itertools.islice(envelopes, n):
        yield env.subject, ev.encode(env), env.event_id


async def _load_lifecycles(url: str, n_events: int) -> int:
    lst = ev.envelop(ev.ListCreated(name="bench"), "l1", ORIGIN)
    tasks = (env for i in itertools.count() for env in _lifecycle(i))
    return await _publish_all(url, _first(n_events, itertools.chain([lst], tasks)))


async def _ordered_read(url: str, until: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Any) -> None:
        nonlocal count
        count += 1
        if msg.metadata.sequence.stream >= until:
            done.set()

    t = time.perf_counter()
    sub = await js.subscribe(ev.EVENTS_ALL, cb=on_msg, ordered_consumer=True)
    await done.wait()
    elapsed = time.perf_counter() - t
    await sub.unsubscribe()
    await nc.close()
    return count / elapsed


def bench_projector(sizes: list[int]) -> None:
    with nats_server() as url:
        for n in sizes:
            last = asyncio.run(_load_lifecycles(url, n))
            raw = asyncio.run(_ordered_read(url, last))
            report(f"raw ordered-consumer read ({n:,} events)", events_per_s=raw)
            cpu = _CpuMeter()
            t = time.perf_counter()
            read = sum(len(b) for b in replay(url, STREAM, 1, last))
            report(
                f"replay reader read ({n:,} events)",
                events_per_s=read / (time.perf_counter() - t),
                **cpu.per_event(read),
            )
            cpu = _CpuMeter()
            t = time.perf_counter()
            _fold_only(replay(url, STREAM, 1, last))
            report(
                f"read, decode and fold, nothing stored ({n:,} events)",
                events_per_s=last / (time.perf_counter() - t),
                **cpu.per_event(last),
            )
            folder = Path(tempfile.mkdtemp(prefix="bench-proj-"))
            cpu = _CpuMeter()
            t = time.perf_counter()
            rebuild_file(folder / "rebuilt.duckdb", replay(url, STREAM, 1, last))
            rebuild = last / (time.perf_counter() - t)
            report(
                f"rebuild ({n:,} events)",
                events_per_s=rebuild,
                vs_raw_read_pct=100 * rebuild / raw,
                **cpu.per_event(last),
            )
            batches = list(replay(url, STREAM, 1, last))
            _projector_parts(n, batches, folder)
            _apply_memory(n, batches, folder)
            for kind, applied in (("empty projection", []), ("projection behind", batches[0][:1])):
                catch_up = _node_catch_up(url, folder / f"home-{len(applied)}", last, applied)
                report(
                    f"node catch-up, {kind} ({n:,} events)",
                    events_per_s=catch_up,
                    vs_raw_read_pct=100 * catch_up / raw,
                )


def _fold_all(
    pairs: Iterable[tuple[ev.Envelope | None, int]], lists: dict[str, Any], tasks: dict[str, Any]
) -> None:
    """Fold each (envelope, sequence) into its aggregate's state, in `lists` or `tasks`."""
    for env, seq in pairs:
        assert env is not None, seq
        agg = env.aggregate_id
        if type(env.event).AGGREGATE == "list":
            lists[agg] = fold_list(lists.get(agg), env, seq)
        else:
            tasks[agg] = fold_task(tasks.get(agg), env, seq)


def _fold_only(batches: Iterator[list[ev.RawEvent]]) -> None:
    """What a rebuild does but storing: the reader's batches decoded, checked and folded
    into states kept in memory, with the rebuild's reader thread. How fast the one fold can go
    before anything is written."""
    import gc

    from projections.projector import _decode_checked
    from projections.rebuild import apply_pipelined

    lists: dict[str, Any] = {}
    tasks: dict[str, Any] = {}

    def fold(batch: list[ev.RawEvent]) -> int:
        gc.disable()
        _fold_all([(_decode_checked(raw)[1], raw.seq) for raw in batch], lists, tasks)
        gc.enable()
        return len(batch)

    apply_pipelined(batches, fold)


def _apply_memory(n: int, batches: list[list[ev.RawEvent]], folder: Path) -> None:
    """Peak memory of applying the log in bulk mode (a rebuild) and batch by batch (a
    catch-up), each in a child process of its own (apply_memory.py)."""
    import pickle

    pickled = folder / "batches.pickle"
    pickled.write_bytes(pickle.dumps(batches))
    script = Path(__file__).resolve().parent / "apply_memory.py"
    for mode in ("bulk", "live"):
        out = subprocess.run(
            [sys.executable, str(script), str(pickled), mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        got = json.loads(out)
        report(
            f"applying in {mode} mode, from memory ({n:,} events)",
            **got,
            rss_peak_over_loaded_mib=got["rss_peak_mib"] - got["rss_loaded_mib"],
        )
    pickled.unlink()


class _CpuMeter:
    """CPU time this process and the nats-server it started use from now on, per event, and
    the rate all of this machine's cores could reach at that cost if nothing else ran."""

    def __init__(self) -> None:
        import psutil

        me = psutil.Process()
        self._procs = [me] + [c for c in me.children() if "nats-server" in c.name()]
        self._start = [self._cpu(p) for p in self._procs]

    @staticmethod
    def _cpu(proc: Any) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def per_event(self, n: int) -> dict[str, float]:
        used = [self._cpu(p) - s for p, s in zip(self._procs, self._start, strict=True)]
        ours, server = used[0], sum(used[1:])
        cores = os.cpu_count() or 1
        return {
            "cpu_us_per_event": ours * 1e6 / n,
            "nats_server_cpu_us_per_event": server * 1e6 / n,
            "all_cores_bound_events_per_s": cores * n / max(ours + server, 1e-9),
        }


def _projector_parts(n: int, batches: list[list[ev.RawEvent]], folder: Path) -> None:
    """What each step of applying the log costs alone, in-process, on events already read:
    decode, subject check, fold, events rows; then all of it with DuckDB (best of three)."""
    import gc

    from projections.projector import Projection, _decode_checked, _EventRows
    from projections.store import arrow_schema, open_db

    raws = [r for b in batches for r in b]
    envs = [ev.decode(r.data) for r in raws]
    con = open_db(folder / "schema.duckdb")
    schema = arrow_schema(con, "events")
    con.close()

    def decode() -> None:
        for raw in raws:
            ev.decode(raw.data)

    def checked() -> None:
        for raw in raws:
            _decode_checked(raw)

    seqs = [r.seq for r in raws]

    def fold() -> None:
        _fold_all(zip(envs, seqs, strict=True), {}, {})

    def rows() -> None:
        start = 0
        for batch in batches:
            out = _EventRows()
            for raw, env in zip(batch, envs[start : start + len(batch)], strict=True):
                out.add((raw, env, "l1"))
            out.table(schema)
            start += len(batch)

    def everything() -> None:
        path = folder / "parts.duckdb"
        path.unlink(missing_ok=True)
        p = Projection(path, bulk=True)
        for batch in batches:
            p.apply(batch)
        p.finish()
        p.close()

    for label, fn in (
        ("decode", decode),
        ("decode and subject check", checked),
        ("fold", fold),
        ("events rows and their Arrow columns", rows),
        ("all but reading: decode, fold, rows, DuckDB writes", everything),
    ):
        best = float("inf")
        for _ in range(3):
            gc.disable()
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
            gc.enable()
        report(
            f"projector part: {label} ({n:,} events)",
            us_per_event=best * 1e6 / len(raws),
            events_per_s=len(raws) / best,
        )


def _node_catch_up(url: str, home: Path, last: int, applied: list[ev.RawEvent]) -> float:
    """A node started on a log of `last` events: events/s until its projection holds them.

    `applied`: the first events of the log, already in the node's projection when it starts
    (none: an empty projection, which the node builds in bulk mode; some: a projection behind
    the log, which it brings up to date batch by batch). Timed from the node's "catching up"
    log line (start-up: interpreter, imports, connection, is not catch-up) to the
    projection's checkpoint reaching `last`.
    """
    from claudedo_actors.cli.client import NodeClient
    from projections.projector import Projection

    if applied:
        home.mkdir(parents=True)
        behind = Projection(home / "projection.duckdb")
        behind.apply(applied)
        behind.close()

    env = {**os.environ, "CLAUDEDO_HOME": str(home), "CLAUDEDO_LOG_LEVEL": "INFO"}
    began: list[float] = []
    node = subprocess.Popen(
        [sys.executable, "-m", "claudedo_actors", "up", "--nats", url],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )

    def watch() -> None:
        assert node.stderr is not None
        for line in node.stderr:
            if not began and "catching up" in line:
                began.append(time.perf_counter())

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        while not (home / "node.json").exists():
            time.sleep(0.01)
        client = NodeClient(home)
        while client.request("info", {})["checkpoint_seq"] < last:
            time.sleep(0.01)
        ended = time.perf_counter()
        if not began:
            raise RuntimeError("the node did not log its catch-up")
        return last / (ended - began[0])
    finally:
        node.terminate()
        node.wait()
        reader.join(5)


# --- CLI round trip and filtered query -----------------------------------------------------


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def bench_cli(rounds: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    repo = home.parent / (home.name + "-repo")
    repo.mkdir()
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x.invalid",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x.invalid",
    }
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=repo, check=True, env=git_env
    )
    env = {**os.environ, "CLAUDEDO_HOME": str(home), "CLAUDEDO_LOG_LEVEL": "WARNING"}
    cli = [str(Path(sys.executable).parent / "claudedo")]
    node = subprocess.Popen([*cli, "up"], env=env)
    try:
        while not (home / "node.json").exists():
            time.sleep(0.01)
        subprocess.run(
            [*cli, "list", "add", "bench", "--dir", str(repo)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Alternating, round by round, so a slow moment of the machine hits every command.
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import claudedo_actors.cli'": [
                sys.executable, "-c", "import claudedo_actors.cli"
            ],
            "claudedo task add": [*cli, "task", "add", "bench", "A task", "--json"],
            "claudedo tasks": [*cli, "tasks", "--json"],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, cmd in commands.items():
                times[name].append(_run(cmd, env))
        bare = times["python -c pass"]
        for name, values in times.items():
            over = [v - b for v, b in zip(values, bare, strict=True)]
            report(
                f"CLI {name}",
                p50_ms=statistics.median(values),
                p95_ms=pct(values, 95),
                over_bare_p50_ms=statistics.median(over),
                runs=len(values),
            )
    finally:
        node.terminate()
        node.wait()


# The filtered query: one list, one status, a page of 50, as `claudedo tasks --list list-3
# --status done --limit 50` asks it.
_QUERY = {"list": "list-3", "status": "done", "limit": 50}


def bench_query(n_tasks: int, rounds: int, load_tasks: int, slots: int) -> None:
    """The filtered query on an idle node, then on the same node running tasks.

    Idle: the tasks are drafts, done or cancelled, nothing is queued, so a query waits for no
    batch of the projection feed. Under load: `load_tasks` instant tasks through the fake
    agent on `slots` slots, queued as `bench.py tasks` queues them, while a client queries at
    no particular phase (a query then waits for the feed's next batch, decision 0010). Each
    figure stands next to the same query straight on a projection file built from the same
    log, measured in the same loop, and the idle CLI next to `python -c pass`.
    """
    from claudedo_actors.node.projector_actor import _QUERY_LINGER_S

    base = Path(tempfile.mkdtemp(prefix="bench-query-"))
    with nats_server() as url:
        last = asyncio.run(_load_tasks(url, n_tasks))
        raw = _RawQuery(base / "raw.duckdb", url, last)
        with runner_bench._node(base, slots, runner_bench.FAKE, url) as (client, _proc):
            while client.request("info", {})["checkpoint_seq"] < last:
                time.sleep(0.05)  # the node building its projection from the log
            page = client.request("tasks", _QUERY)
            assert page and page == raw.rows(), "the node and the file disagree"
            counts = client.request("sql", {"query": "select count(*) from tasks"})["rows"][0][0]
            what = f"{counts:,} tasks: one list, one status, {len(page)} rows"
            _query_idle(client, raw, rounds, what)
            _query_under_load(client, raw, base, load_tasks, slots, what)
            report("feed: a waiting query's linger (the bound under load)",
                   query_linger_ms=_QUERY_LINGER_S * 1000)  # fmt: skip
        raw.close()
    shutil.rmtree(base, ignore_errors=True)


class _RawQuery:
    """The filtered query on a projection file of the bench's own, built from the same log
    (the way a node builds an empty projection): DuckDB alone with the SQL the API runs, and
    the API's query functions in-process (list resolved, rows made JSON-ready). And what one
    batch of the feed costs on that file: 16 events of tasks being run, applied live."""

    def __init__(self, path: Path, url: str, last: int) -> None:
        from projections import Projection

        rebuild_file(path, replay(url, STREAM, 1, last))
        self.projection = Projection(path)
        self._batches = _live_batches(last + 1, 16, 600)
        # The SQL the API's query function runs, recorded from one call of it: the DuckDB
        # baseline is that statement, not a copy of it that could drift.
        con = self.projection.con
        self._calls: list[tuple[str, Any]] = []

        class Recording:
            def execute(_, sql: str, params: Any = None) -> Any:
                self._calls.append((sql, params))
                return con.execute(sql, params)

            def __getattr__(_, name: str) -> Any:
                return getattr(con, name)

        self.projection.con = Recording()  # type: ignore[assignment]  # a stand-in, for one call
        self.rows()
        self.projection.con = con
        self.sql, self.params = self._calls[-1]

    def rows(self) -> list[dict[str, Any]]:
        from projections import queries as q

        p = self.projection
        list_id = q.resolve_list(p, str(_QUERY["list"])).id
        return q.tasks_filtered(p, list_id, str(_QUERY["status"]), int(_QUERY["limit"]))

    def duckdb_only(self) -> None:
        self.projection.con.execute(self.sql, self.params).fetchall()

    def apply_batch(self) -> None:
        if self._batches:
            self.projection.apply(self._batches.pop(0))

    def close(self) -> None:
        self.projection.close()


def _live_batches(first_seq: int, size: int, n: int) -> list[list[ev.RawEvent]]:
    """`n` batches of `size` events from `first_seq` on, as the feed gets them while tasks
    run: tasks on list-1 (not the list queried) created, then their lifecycles interleaved."""
    from events.log import RawEvent

    tasks = n * size // 7 + 1
    lifecycles = [_lifecycle(10**7 + i) for i in range(tasks)]
    for i, envs in enumerate(lifecycles):
        created = ev.TaskCreated(list_id="list-1", title=f"Load {i}")
        envs[0] = ev.envelop(created, envs[0].aggregate_id, ORIGIN)
    order = [envs[k] for k in range(7) for envs in lifecycles][: n * size]
    raws = [RawEvent(first_seq + j, env.subject, ev.encode(env)) for j, env in enumerate(order)]
    return [raws[j : j + size] for j in range(0, len(raws), size)]


def _ms_of(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def _query_idle(client: Any, raw: _RawQuery, rounds: int, what: str) -> None:
    """Every way of asking, alternating in one loop, so a slow moment hits them all."""
    env = {**os.environ, "CLAUDEDO_HOME": str(client.home.root), "CLAUDEDO_LOG_LEVEL": "WARNING"}
    cli = [str(Path(sys.executable).parent / "claudedo"), "tasks", "--json"]
    cli += ["--list", str(_QUERY["list"]), "--status", str(_QUERY["status"]), "--limit", "50"]
    ways: dict[str, Any] = {
        f"idle: filtered query via the API ({what})": lambda: client.request("tasks", _QUERY),
        "idle: API round trip without a query (info)": lambda: client.request("info", {}),
        "idle: baseline, the same query in-process on the file (no NATS, actor, JSON)": raw.rows,
        "idle: baseline, the same SQL on the file, DuckDB alone": raw.duckdb_only,
        "idle: CLI " + " ".join(cli[1:]): lambda: _run(cli, env),
        "idle: baseline, python -c pass": lambda: _run([sys.executable, "-c", "pass"], env),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            times[name].append(_ms_of(fn))
    for name, values in times.items():
        report(name, p50_ms=statistics.median(values), p95_ms=pct(values, 95), runs=len(values))


def _query_under_load(
    client: Any, raw: _RawQuery, base: Path, n: int, slots: int, what: str
) -> None:
    """Tasks running through the fake agent while a client asks, at random moments."""
    import random

    repo = runner_bench._repo(base / "load")
    list_id = client.request("list.add", {"name": "load", "dir": str(repo)})["id"]
    ids = [client.request("task.add", {"list": list_id, "title": f"t{i}"})["id"] for i in range(n)]
    ended = runner_bench._Ended(client)
    ways: dict[str, Any] = {
        f"under load: filtered query via the API ({what})": lambda: client.request("tasks", _QUERY),
        "under load: API round trip without a query (info)": lambda: client.request("info", {}),
        "under load: baseline, the same SQL on the file, DuckDB alone": raw.duckdb_only,
        "under load: baseline, one feed batch (16 events) applied to the file": raw.apply_batch,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    t = time.perf_counter()
    for start in range(0, n, 50):
        client.request("task.queue", {"tasks": ids[start : start + 50]})
    while ended.count() < n:
        for name, fn in ways.items():
            time.sleep(random.uniform(0, 0.5))  # a board polled at no particular phase
            times[name].append(_ms_of(fn))
    ended.wait(n)
    elapsed = time.perf_counter() - t
    ended.close()
    for name, values in times.items():
        report(
            name,
            p50_ms=statistics.median(values),
            p95_ms=pct(values, 95),
            max_ms=max(values),
            runs=len(values),
            load=f"{n} instant tasks on {slots} slots, {n / elapsed:.1f} tasks/s",
        )


async def _load_tasks(url: str, n: int) -> int:
    """`n` tasks on 10 lists, a third each draft, done (a whole run) and cancelled: nothing
    for a node to run. Returns the log's last sequence."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _reset(js)
    futures = []
    for k in range(10):
        lst = ev.envelop(ev.ListCreated(name=f"list-{k}"), f"list-{k}", ORIGIN)
        futures.append(await js.publish_async(lst.subject, ev.encode(lst)))
    for i in range(n):
        t = f"task-{i:08d}"
        created = ev.TaskCreated(list_id=f"list-{i % 10}", title=f"Task {i}")
        if i % 3 == 0:
            envs = [ev.envelop(created, t, ORIGIN)]
        elif i % 3 == 1:
            envs = [ev.envelop(created, t, ORIGIN), *_lifecycle(i)[1:]]
        else:
            envs = [ev.envelop(e, t, ORIGIN) for e in (created, ev.TaskCancelled())]
        for env in envs:
            futures.append(await js.publish_async(env.subject, ev.encode(env)))
        if len(futures) >= 4000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    last = await EventLog(js).last_seq()
    await nc.close()
    return last


# --- audit verify --------------------------------------------------------------------------


def _audit_log(n: int, key: Any, every: int = 1_000) -> Iterator[tuple[str, bytes]]:
    """`n` stored messages as a node writes them: task lifecycles, hash-chained, with a
    signed checkpoint of the log hash after every `every` of them."""
    import hashlib

    from events.audit import checkpoint_message, next_log_hash, sha256_hex
    from events.checkpoints import LogCheckpointed

    tips: dict[str, str | None] = {}
    log_hash, seq, i, pending = bytes(32), 0, 0, 0

    def stored(env: ev.Envelope) -> tuple[str, bytes]:
        nonlocal log_hash, seq
        data = ev.encode(msgspec.structs.replace(env, prev=tips.get(env.aggregate_id)))
        tips[env.aggregate_id] = sha256_hex(data)
        seq += 1
        log_hash = next_log_hash(log_hash, seq, env.subject, hashlib.sha256(data).digest())
        return env.subject, data

    while seq < n:
        for env in _lifecycle(i):
            yield stored(env)
            pending += 1
            if pending >= every:
                h = log_hash.hex()
                sig = key.sign(checkpoint_message(STREAM, seq, h))
                cp = LogCheckpointed(node_id="bench", stream=STREAM, upto_seq=seq, log_hash=h,
                                     key=key.public_hex, signature=sig)  # fmt: skip
                yield stored(ev.envelop(cp, key.id, ORIGIN))
                pending = 0
        i += 1


async def _load_audit_log(url: str, n: int, key: Any) -> int:
    return await _publish_all(url, ((subject, data, None) for subject, data in _audit_log(n, key)))


def bench_audit(sizes: list[int]) -> None:
    """`audit verify`'s log checks (chains, sequence, log hash, checkpoint signatures, what
    runs and commits to check) over a live log and over an export, next to the bare read."""
    from claudedo_actors.audit.commands import verify_export
    from claudedo_actors.audit.export import export
    from claudedo_actors.audit.verify import verify_log
    from events.audit import SigningKey

    key = SigningKey(SigningKey.new_seed())
    trusted = {key.id: key.public_hex}
    with nats_server() as url:
        for n in sizes:
            last = asyncio.run(_load_audit_log(url, n, key))
            t = time.perf_counter()
            read = sum(len(b) for b in replay(url, STREAM, 1, last))
            raw = read / (time.perf_counter() - t)
            report(f"replay reader read ({last:,} messages)", events_per_s=raw)
            cpu = _CpuMeter()
            t = time.perf_counter()
            result = verify_log(replay(url, STREAM, 1, last), STREAM, trusted, None, last)
            rate = last / (time.perf_counter() - t)
            assert not result.discrepancies, result.discrepancies[:3]
            assert len(result.checkpoints) == last // 1_001, len(result.checkpoints)
            report(
                f"audit verify, live log ({last:,} messages, {len(result.checkpoints):,} "
                "checkpoints)",
                events_per_s=rate,
                vs_raw_read_pct=100 * rate / raw,
                **cpu.per_event(last),
            )
            folder = Path(tempfile.mkdtemp(prefix="bench-audit-"))
            try:
                t = time.perf_counter()
                export(folder / "export", replay(url, STREAM, 1, last), STREAM, trusted,
                       folder / "no-transcripts", with_git=False)  # fmt: skip
                report(f"audit export ({last:,} messages)",
                       events_per_s=last / (time.perf_counter() - t))  # fmt: skip
                (folder / "export" / "keys").mkdir(exist_ok=True)
                t = time.perf_counter()
                checked = verify_export(folder / "export", None, folder / "export" / "keys")
                rate = last / (time.perf_counter() - t)
                assert checked.ok, checked.discrepancies[:3]
                report(f"audit verify --export ({last:,} messages)", events_per_s=rate,
                       vs_raw_read_pct=100 * rate / raw)  # fmt: skip
            finally:
                shutil.rmtree(folder, ignore_errors=True)


# --- analytics, Parquet, --as-of ------------------------------------------------------------

_MODELS = ("claude-opus-4-1", "claude-sonnet-4-6", "claude-haiku-4-5")


def _analytic_lifecycle(i: int) -> list[ev.Envelope]:
    """A task of one of two lists whose run 1 fails one time in five and is retried."""
    t, slot, model = f"task-{i:08d}", i % 4, _MODELS[i % 3]
    at = {"node_id": "bench", "slot": slot, "workdir": f"/w/{t}"}
    run = {"turn_count": 3, "tokens_in": 1200, "tokens_out": 300, "cost_usd": 0.012}
    events: list[ev.Event] = [
        ev.TaskCreated(list_id=f"l{i % 2}", title=f"Task {i}"),
        ev.TaskQueued(),
        ev.TaskClaimed(node_id="bench", slot=slot),
        ev.TaskStarted(**at),
        ev.RunStarted(run_number=1, prompt=f"Task {i}", model=model, **at),
    ]
    if i % 5 == 0:
        events += [
            ev.RunFinished(run_number=1, success=False, cause="rate_limited", **run),
            ev.RunStarted(run_number=2, prompt=f"Task {i}", model=model, is_retry=True, **at),
        ]
    events += [
        ev.RunFinished(run_number=2 if i % 5 == 0 else 1, success=True, **run),
        ev.TaskCompleted(result="done"),
    ]
    return [ev.envelop(e, t, ORIGIN) for e in events]


async def _load_analytics_log(url: str, n_events: int) -> int:
    lists = [ev.envelop(ev.ListCreated(name=f"list {k}"), f"l{k}", ORIGIN) for k in (0, 1)]
    tasks = (env for i in itertools.count() for env in _analytic_lifecycle(i))
    return await _publish_all(url, _first(n_events, itertools.chain(lists, tasks)))


def _p50_ms(fn: Any, rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return pct(times, 50), pct(times, 95)


def bench_analytics(n_events: int, rounds: int, as_of_rounds: int) -> None:
    """The analytics views, the Parquet export and `--as-of` on one log of `n_events`."""
    import random

    import duckdb

    from projections import Projection
    from projections import queries as q
    from projections.export import export_parquet
    from projections.snapshots import DEFAULT_EVERY, Snapshots, as_of_views

    folder = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    try:
        with nats_server() as url:
            last = asyncio.run(_load_analytics_log(url, n_events))
            snapshots = Snapshots(folder / "snapshots", DEFAULT_EVERY)
            # Applied as a live node applies the log (5,000 a batch), taking its snapshots.
            p = Projection(folder / "live.duckdb", allowed=(snapshots.folder, folder / "as-of"))
            t = time.perf_counter()
            for batch in replay(url, STREAM, 1, last, batch=5_000):
                before = p.checkpoint
                after = p.apply(batch)
                if snapshots.due(before, after):
                    snapshots.take(p.con, after)
            applied_s = time.perf_counter() - t
            runs = p.con.execute("SELECT count(*) FROM runs").fetchone()[0]  # type: ignore[index]
            report(f"live apply with snapshots ({last:,} events, {runs:,} runs)",
                   events_per_s=last / applied_s, snapshots=len(snapshots.seqs()))  # fmt: skip

            base50, base95 = _p50_ms(lambda: p.con.execute(
                "SELECT count(*), sum(cost_usd) FROM runs").fetchall(), rounds)  # fmt: skip
            report(f"raw scan of runs ({runs:,} runs)", p50_ms=base50, p95_ms=base95)
            for view in ("run_facts", "run_stats_by_model", "run_stats_by_list",
                         "run_stats_by_day", "failure_causes"):  # fmt: skip
                sql = f"SELECT * FROM {view}"
                if view == "run_facts":
                    sql = "SELECT count(*), sum(cost_usd) FROM run_facts"
                p50, p95 = _p50_ms(lambda sql=sql: p.con.execute(sql).fetchall(), rounds)
                report(f"view {view} ({runs:,} runs)", p50_ms=p50, p95_ms=p95)

            t = time.perf_counter()
            export_parquet(p, folder / "parquet")
            ours = time.perf_counter() - t
            first_page = _p50_ms(lambda: q.tasks_filtered(p, None, None, 500, 0, None), rounds)
            p.close()
            con = duckdb.connect(str(folder / "live.duckdb"), read_only=True)
            t = time.perf_counter()
            con.execute(f"COPY events TO '{folder / 'copy-events.parquet'}' (FORMAT parquet)")
            copy_events = time.perf_counter() - t
            t = time.perf_counter()
            for table in ("lists", "tasks", "subtasks", "runs", "worktrees", "events",
                          "skipped_messages"):  # fmt: skip
                con.execute(
                    f"COPY {table} TO '{folder / f'copy-{table}.parquet'}' (FORMAT parquet)"
                )
            copy_all = time.perf_counter() - t
            con.close()
            report(f"export --parquet, every table ({last:,} events)", seconds=ours,
                   duckdb_copy_every_table_s=copy_all, duckdb_copy_events_s=copy_events,
                   vs_duckdb_copy_pct=100 * ours / copy_all)  # fmt: skip

            p = Projection(folder / "live.duckdb", allowed=(snapshots.folder, folder / "as-of"))
            (folder / "as-of").mkdir()
            rng = random.Random(15)

            def read(first: int, until: int) -> Iterator[list[ev.RawEvent]]:
                return replay(url, STREAM, first, until)

            times = []
            for k in range(as_of_rounds):
                seq = rng.randint(1, last)
                t = time.perf_counter()
                built = snapshots.build(seq, read, folder / "as-of" / f"{k}.duckdb")
                with as_of_views(p, built, seq):
                    q.tasks_filtered(p, None, None, 500, 0, None)
                times.append(time.perf_counter() - t)
            p.close()
            report(f"--as-of a random sequence, first page of tasks ({last:,} events)",
                   p50_s=pct(times, 50), p95_s=pct(times, 95),
                   now_first_page_p50_ms=first_page[0])  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        choices=[
            "all",
            "log",
            "sync",
            "projector",
            "analytics",
            "audit",
            "cli",
            "query",
            "dispatch",
            "tasks",
            "rss",
            "web",
        ],
    )
    parser.add_argument("--dispatch-tasks", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--slots", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure of `tasks`")
    parser.add_argument("--rss-tasks", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--log-events", type=int, default=20_000)
    parser.add_argument("--projector-events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--audit-events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--analytics-events", type=int, default=1_000_000)
    parser.add_argument("--analytics-rounds", type=int, default=20)
    parser.add_argument("--as-of-rounds", type=int, default=20)
    parser.add_argument("--cli-rounds", type=int, default=30)
    parser.add_argument("--query-tasks", type=int, default=100_000)
    parser.add_argument("--query-rounds", type=int, default=50, help="idle rounds of `query`")
    parser.add_argument(
        "--query-load", type=int, default=500, help="tasks run while `query` asks under load"
    )
    parser.add_argument("--query-slots", type=int, default=2)
    parser.add_argument("--web-store", type=int, default=10_000, help="tasks in the store")
    parser.add_argument("--web-load", type=int, default=500, help="tasks run, board shut/open")
    parser.add_argument("--web-rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("ops/bench/out/results.json"))
    args = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    # Not writing bytecode, every command compiles our modules again (none are cached).
    pyc = "not written (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "written"
    python = sys.version.split()[0]
    print(f"# {when} on {os.cpu_count()} cores, Python {python}, bytecode {pyc}")
    if args.what in ("all", "log"):
        bench_log(args.log_events)
    if args.what in ("all", "sync"):
        bench_sync(args.log_events)
    if args.what in ("all", "projector"):
        bench_projector(args.projector_events)
    if args.what in ("all", "audit"):
        bench_audit(args.audit_events)
    if args.what in ("all", "analytics"):
        bench_analytics(args.analytics_events, args.analytics_rounds, args.as_of_rounds)
    if args.what in ("all", "cli"):
        bench_cli(args.cli_rounds)
    if args.what in ("all", "query"):
        bench_query(args.query_tasks, args.query_rounds, args.query_load, args.query_slots)
    if args.what in ("all", "dispatch"):
        runner_bench.bench_dispatch(report, args.dispatch_tasks)
    if args.what in ("all", "tasks"):
        runner_bench.bench_throughput(report, args.tasks, args.slots, args.repeat)
    if args.what in ("all", "rss"):
        runner_bench.bench_rss(report, args.rss_tasks)
    if args.what in ("all", "web"):
        import web_bench

        web_bench.bench_web(
            report, nats_server, _load_tasks, args.web_store, args.web_load, args.query_slots,
            args.web_rounds,
        )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
