"""The API: NATS requests on `claudedo.api.<verb>` become validated commands or queries."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

import events as ev
from claudedo_actors.agent.follow import last_lines, summarize
from claudedo_actors.api import pages
from claudedo_actors.api import verbs as rq
from claudedo_actors.api.decider import Decider, Plan, prepare
from claudedo_actors.api.ports import Projections, ReadLog
from claudedo_actors.api.reply_streams import ReplyStreams
from claudedo_actors.git import review
from events.errors import ClaudeDoError, Conflict, Invalid
from projections import Projection, TaskState
from projections import queries as q
from projections.export import export_parquet
from projections.rebuild import rebuild_file
from projections.snapshots import Snapshots, as_of_views

log = logging.getLogger("claudedo.api")
T = TypeVar("T")

API_QUEUE_GROUP = "claudedo-api"
# The rest of a paged reply is asked on `<PAGES_PREFIX>.<node's token>.<reply's token>`.
PAGES_PREFIX = ev.api_subject("page")
PAGE_IDLE_ENV = "CLAUDEDO_PAGE_IDLE_S"
_ATTEMPTS = 8
# Built states of past moments kept for the next questions (each a small DuckDB file).
_AS_OF_KEPT = 4

Handler = Callable[["Api", Any], Awaitable[Any]]
U = TypeVar("U")
Ids = TypeVar("Ids", bound=rq.TaskIds)


class Querier(Protocol):
    """Runs a query in the projector, on the projection as it is or as it was."""

    def __call__(self, fn: Callable[[Projection], U]) -> Awaitable[U]: ...


class Api:
    """Answers every request with `{"ok": ...}` or `{"error": {"code", "message"}}`."""

    def __init__(
        self,
        nc: Client,
        log_: ev.EventLog,
        feed: Projections,
        node_id: str,
        info: Callable[[], dict[str, Any]],
        rebuild_path: Path,
        swap: Callable[[Path], Awaitable[int]],
        read_log: ReadLog,
        snapshots: Snapshots | None = None,
        as_of_dir: Path | None = None,
    ) -> None:
        self.nc = nc
        self.log = log_
        self.feed = feed
        self.node_id = node_id
        self._info = info
        self._rebuild_path = rebuild_path
        self._swap = swap
        self._read_log = read_log
        self._snapshots = snapshots
        self._as_of_dir = as_of_dir
        self._as_of_built: OrderedDict[int, Path] = OrderedDict()
        self._as_of_used: dict[int, float] = {}
        self._as_of_lock = asyncio.Lock()
        self._rebuild_lock = asyncio.Lock()
        self.list_lock = asyncio.Lock()
        self.review_lock = asyncio.Lock()  # one merge or discard at a time in this node
        self._sub: Any = None
        self._pages_sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.replies = ReplyStreams(
            self._publish, f"{PAGES_PREFIX}.{secrets.token_hex(8)}", _page_idle_s()
        )

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            ev.api_subject(">"), queue=API_QUEUE_GROUP, cb=self._on_request
        )
        # The rest of a paged reply is asked of this node alone (its subject names it).
        self._pages_sub = await self.nc.subscribe(f"{self.replies.prefix}.*", cb=self._on_next)

    async def while_no_review(self, fn: Callable[[], T]) -> T:
        """Run blocking `fn` in a thread while no merge or discard of this node is under way."""
        async with self.review_lock:
            return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def stop(self) -> None:
        for sub in (self._sub, self._pages_sub):
            if sub is not None:
                await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await self.replies.close()

    async def _on_request(self, msg: Msg) -> None:
        if msg.subject.startswith(PAGES_PREFIX + "."):
            return  # the rest of a reply: its node answers on its own subscription
        if not _answerable(msg.reply):
            return
        # One task per request: a command waiting for the projection never holds up others.
        self._spawn(self._handle(msg))

    async def _on_next(self, msg: Msg) -> None:
        if _answerable(msg.reply):
            self._spawn(self.replies.on_next(msg.reply, msg.subject.rsplit(".", 1)[-1]))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        await self.nc.publish(subject, payload, headers=headers or None)

    async def _dispatch(self, verb: str, data: bytes) -> tuple[Any, bool]:
        """Decode, validate and answer one request: its result (a value or Pages) and
        whether the asker reads pages. Raises ClaudeDoError for a refused request."""
        route = ROUTES.get(verb)
        if route is None:
            raise Invalid(f"unknown API verb {verb!r}")
        req_type, handler = route
        try:
            req = msgspec.json.decode(data or b"{}", type=req_type)
        except msgspec.ValidationError as exc:
            raise _invalid_request(exc) from None
        except msgspec.DecodeError:
            raise Invalid("invalid request: not JSON") from None
        return await handler(self, req), req.paged

    async def call(self, verb: str, payload: dict[str, Any]) -> Any:
        """One request from inside the node (the web board), through the same decoding,
        validation and handlers as a request over NATS; a listing's pages joined (sql:
        `{"columns", "rows"}`). Raises ClaudeDoError as the CLI shows it."""
        result, _ = await self._dispatch(verb, msgspec.json.encode(payload))
        if not isinstance(result, pages.Pages):
            return result
        rows = [row async for page in result.pages for row in page]
        return rows if result.columns is None else {"columns": result.columns, "rows": rows}

    async def _handle(self, msg: Msg) -> None:
        verb = msg.subject.removeprefix(ev.api_subject(""))
        paged = False
        reply: Any
        try:
            result, paged = await self._dispatch(verb, msg.data)
            reply = result if isinstance(result, pages.Pages) else {"ok": result}
        except ClaudeDoError as exc:
            reply = {"error": {"code": exc.code, "message": _one_line(exc.message)}}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("request %s failed", verb)
            detail = _one_line(str(exc)) or type(exc).__name__
            reply = {"error": {"code": "internal", "message": f"internal error: {detail}"}}
        if msg.reply:
            await self._reply(msg.reply, reply, paged)

    async def _reply(self, reply_to: str, reply: Any, paged: bool) -> None:
        """One message, or (for a client that reads pages) as many as the reply needs."""
        budget = max(4096, int(self.nc.max_payload or 1 << 20) - pages.HEADROOM)
        if paged:
            await self.replies.send(reply_to, pages.messages(reply, budget))
            return
        try:
            data = await pages.single(reply, budget)
        except pages.TooLarge:
            data = msgspec.json.encode(_too_large(budget))
        except ClaudeDoError as exc:
            data = msgspec.json.encode(
                {"error": {"code": exc.code, "message": _one_line(exc.message)}}
            )
        except Exception as exc:
            log.exception("reading a reply failed")
            detail = _one_line(str(exc)) or type(exc).__name__
            data = msgspec.json.encode(
                {"error": {"code": "internal", "message": f"internal error: {detail}"}}
            )
        await self._publish(reply_to, data, {})

    # --- plumbing -------------------------------------------------------------------------

    async def catch_up(self, hurry: bool = True) -> None:
        """Wait until the projection holds everything the log held when we asked."""
        await self.feed.wait_for(await self.log.last_seq(), hurry=hurry)

    async def query(self, fn: Callable[[Projection], Any]) -> Any:
        # A query sees everything logged before it asked, but does not make the projector
        # apply a batch for it (a board polled under load would undo the batching).
        await self.catch_up(hurry=False)
        return await self.feed.run_in_projection(fn)

    async def at(
        self, as_of: int | datetime | None
    ) -> Callable[[Callable[[Projection], T]], Awaitable[T]]:
        """How to query the projection as it was right after `as_of` (a sequence or a time;
        None: as it is). Each query of the answer runs in the projector, over the state
        built for that sequence from the nearest snapshot (projections/snapshots.py)."""
        await self.catch_up(hurry=False)
        if as_of is None:
            return self.feed.run_in_projection
        seq = await self.feed.run_in_projection(lambda p: q.seq_as_of(p, as_of))
        built = await self._built(seq)

        async def run(fn: Callable[[Projection], U]) -> U:
            self._as_of_used[seq] = time.monotonic()  # kept while its pages are read

            def within(p: Projection) -> U:
                with as_of_views(p, built, seq):
                    return fn(p)

            return await self.feed.run_in_projection(within)

        return run

    async def _built(self, seq: int) -> Path:
        """The projection file of the state after `seq`, built once and kept for the next
        questions (pages of the same answer, a few recent moments)."""
        if self._snapshots is None or self._as_of_dir is None:
            raise Invalid("this node keeps no snapshots: --as-of is not served here")
        snapshots, folder = self._snapshots, self._as_of_dir
        async with self._as_of_lock:
            self._as_of_used[seq] = time.monotonic()
            found = self._as_of_built.get(seq)
            if found is not None and found.exists():
                self._as_of_built.move_to_end(seq)
                return found
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{seq}.duckdb"
            skipped = await self.feed.run_in_projection(lambda p: q.skipped_seqs(p, seq))
            loop = asyncio.get_running_loop()
            build = functools.partial(snapshots.build, seq, self._read_log, target, skipped)
            await loop.run_in_executor(None, build)
            self._as_of_built[seq] = target
            self._evict_built()
            return target

    def _evict_built(self) -> None:
        """Past states beyond the few kept go, oldest first; not one whose pages a client
        may still be reading (used within the time a paged reply waits for its reader)."""
        idle = _page_idle_s()
        now = time.monotonic()
        for seq in list(self._as_of_built):
            if len(self._as_of_built) <= _AS_OF_KEPT:
                return
            if now - self._as_of_used.get(seq, 0.0) < idle:
                continue
            old = self._as_of_built.pop(seq)
            self._as_of_used.pop(seq, None)
            for stale in (old, old.with_name(old.name + ".wal")):
                stale.unlink(missing_ok=True)

    async def command(self, req: rq.Request, decide: Callable[[Decider], Plan]) -> Any:
        """Decide on the current state, append with the concurrency check, retry on conflict."""
        req = await asyncio.get_running_loop().run_in_executor(None, prepare, req)
        origin = ev.Origin(
            node_id=self.node_id,
            correlation_id=req.request_id or ev.new_event_id(),
            actor=req.actor,
        )
        for attempt in range(_ATTEMPTS):
            await self.catch_up()
            plan = await self.feed.run_in_projection(lambda p: decide(Decider(p, origin)))
            try:
                last = 0
                for append in plan.appends:
                    seqs = await self.log.append(
                        append.envelopes, append.expected_seq, append.guard
                    )
                    last = max(last, seqs[-1])
            except ev.ConcurrencyError:
                # Someone else changed the target first: wait a little (jittered, growing)
                # so that competing writers do not keep colliding, then decide again.
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
                continue
            await self.feed.wait_for(last)
            return await self.feed.run_in_projection(plan.reply)
        raise Conflict("the target kept changing while the command ran; try again")

    async def each_task(self, req: Ids, decide: Callable[[Decider, Ids], Plan]) -> list[Any]:
        """A command on several tasks: all are validated first, then each is appended."""
        if not req.tasks:
            raise Invalid("give at least one task id")
        origin = ev.Origin(node_id=self.node_id, correlation_id="check", actor=req.actor)
        await self.catch_up()
        # Validation of the whole request first: one bad id and nothing changes.
        await self.feed.run_in_projection(lambda p: decide(Decider(p, origin), req))
        ids = await self.feed.run_in_projection(
            lambda p: [q.resolve_task(p, ref).id for ref in req.tasks]
        )
        # Each task is its own aggregate: decide all on one projection state, append each
        # guarded, and wait for the projection once. A task that moved meanwhile goes through
        # the retrying single command instead.
        origin = ev.Origin(
            node_id=self.node_id,
            correlation_id=req.request_id or ev.new_event_id(),
            actor=req.actor,
        )
        unique = list(dict.fromkeys(ids))

        def one(task_id: str) -> Ids:
            return msgspec.structs.replace(req, tasks=[task_id])

        plans = await self.feed.run_in_projection(
            lambda p: [decide(Decider(p, origin), one(t)) for t in unique]
        )
        last = 0
        retry: list[str] = []
        for task_id, plan in zip(unique, plans, strict=True):
            try:
                for append in plan.appends:
                    seqs = await self.log.append(
                        append.envelopes, append.expected_seq, append.guard
                    )
                    last = max(last, seqs[-1])
            except ev.ConcurrencyError:
                retry.append(task_id)
        for task_id in retry:
            single = one(task_id)
            await self.command(single, functools.partial(_decide_for, decide, single))
        await self.feed.wait_for(last)
        return await self.feed.run_in_projection(lambda p: q.task_details(p, unique))

    async def rebuild(self) -> dict[str, Any]:
        """Replay the log into a fresh file, swap it in, and catch up."""
        async with self._rebuild_lock:
            loop = asyncio.get_running_loop()
            target = await self.log.last_seq()
            started = loop.time()
            batches = self._read_log(1, target)
            checkpoint = await loop.run_in_executor(None, rebuild_file, self._rebuild_path, batches)
            elapsed = loop.time() - started
            if checkpoint != target:
                raise ClaudeDoError(
                    f"rebuild stopped at {checkpoint} of {target}; kept the old one"
                )
            checkpoint = await self._swap(self._rebuild_path)
            await self.catch_up()
            return {"rebuilt_to_seq": target, "checkpoint_seq": checkpoint, "seconds": elapsed}


def _decide_for(decide: Callable[[Decider, Ids], Plan], req: Ids, decider: Decider) -> Plan:
    return decide(decider, req)


def _too_large(budget: int) -> dict[str, Any]:
    return {
        "error": {
            "code": "too_large",
            "message": f"the reply is larger than one NATS message ({budget // 1024} KiB): "
            'ask with "paged": true (the CLI does) or a smaller "limit"',
        }
    }


def _page_idle_s() -> float:
    """How long a paged reply waits for its client: CLAUDEDO_PAGE_IDLE_S, else 60 s."""
    try:
        return max(0.1, float(os.environ.get(PAGE_IDLE_ENV, "60")))
    except ValueError:
        return 60.0


def _invalid_request(exc: msgspec.ValidationError) -> Invalid:
    """msgspec's "Expected `int` >= 1 - at `$.max_turns`" as "max_turns: expected ..."."""
    text = str(exc)
    what, sep, where = text.rpartition(" - at `")
    path = where[:-1].removeprefix("$").lstrip(".") if sep and where.endswith("`") else ""
    if not sep:
        what = text
    what = what[:1].lower() + what[1:]
    return Invalid(f"invalid request: {path}: {what}" if path else f"invalid request: {what}")


def _one_line(text: str) -> str:
    """Replies carry one line a user can read: whitespace collapsed, length bounded."""
    return " ".join(text.split())[:500]


# --- routes ------------------------------------------------------------------------------


async def _list_add(api: Api, req: rq.CreateList) -> Any:
    # Every list command guards all lists: one at a time in this node, so they never collide.
    async with api.list_lock:
        return await api.command(req, lambda d: d.create_list(req))


async def _list_config(api: Api, req: rq.ConfigureList) -> Any:
    async with api.list_lock:
        return await api.command(req, lambda d: d.configure_list(req))


async def _list_ls(api: Api, req: rq.ListLists) -> Any:
    return await api.query(lambda p: q.lists_all(p, req.archived))


async def _list_archive(api: Api, req: rq.ListOf) -> Any:
    async with api.list_lock:
        return await api.command(req, lambda d: d.archive_list(req))


async def _list_unarchive(api: Api, req: rq.ListOf) -> Any:
    async with api.list_lock:
        return await api.command(req, lambda d: d.unarchive_list(req))


async def _list_delete(api: Api, req: rq.DeleteList) -> Any:
    async with api.list_lock:
        return await api.command(req, lambda d: d.delete_list(req))


async def _task_add(api: Api, req: rq.AddTask) -> Any:
    return await api.command(req, lambda d: d.add_task(req))


async def _task_show(api: Api, req: rq.ShowTask) -> Any:
    run = await api.at(req.as_of)
    return await run(lambda p: q.task_detail(p, q.resolve_task(p, req.task).id))


async def _task_edit(api: Api, req: rq.EditTask) -> Any:
    return await api.command(req, lambda d: d.edit_task(req))


async def _task_queue(api: Api, req: rq.TaskIds) -> Any:
    return await api.each_task(req, Decider.queue)


async def _task_unqueue(api: Api, req: rq.TaskIds) -> Any:
    return await api.each_task(req, Decider.unqueue)


async def _task_cancel(api: Api, req: rq.TaskIds) -> Any:
    return await api.each_task(req, Decider.cancel)


async def _task_archive(api: Api, req: rq.TaskIds) -> Any:
    return await api.each_task(req, Decider.archive)


async def _task_unarchive(api: Api, req: rq.TaskIds) -> Any:
    return await api.each_task(req, Decider.unarchive)


async def _task_delete(api: Api, req: rq.DeleteTasks) -> Any:
    return await api.each_task(req, Decider.delete)


async def _task_continue(api: Api, req: rq.ContinueTask) -> Any:
    return await api.command(req, lambda d: d.continue_task(req))


async def _runs(api: Api, req: rq.RunsOfTask) -> Any:
    rows = await api.query(lambda p: q.runs_of_task(p, q.resolve_task(p, req.task).id))
    return pages.Pages.of(rows)


async def _worktree_diff(api: Api, req: rq.WorktreeOf) -> Any:
    task, repo = await api.query(lambda p: review.task_and_repo(p, req.task))
    return await review.in_thread(lambda: review.diff(task, repo, req.stat))


async def _worktree_merge(api: Api, req: rq.WorktreeOf) -> Any:
    outcome: list[str] = []

    def merge(task: TaskState, repo: str) -> ev.Event:
        event, said = review.merge(task, repo)
        outcome.append(said)
        return event

    reply = await _review(api, req, "merge", merge)
    return {**reply, "outcome": outcome[0] if outcome else "merged"}


async def _worktree_prune(api: Api, req: rq.PruneWorktrees) -> Any:
    """Each worktree git shows merged or empty, removed (with `apply`) as a discard of the
    task as it was checked: one that moved meanwhile is left alone."""
    found = []
    for task_id in await api.query(q.tasks_with_worktrees):
        try:
            task, repo = await api.query(functools.partial(review.task_and_repo, ref=task_id))
            why = await review.in_thread(functools.partial(review.prunable, task, repo))
            if why is None:
                continue
            if req.apply:
                one = rq.WorktreeOf(task=task.id, actor=req.actor, request_id=req.request_id)
                await _review(api, one, "discard", review.discard, task.last_seq)
        except ClaudeDoError as exc:
            log.info("prune left task %s alone: %s", task_id, exc.message)
            continue
        tree = task.worktree
        assert tree is not None
        found.append({"task_id": task.id, "title": task.title, "branch": tree.branch,
                      "path": tree.path, "why": why})  # fmt: skip
    return {"applied": req.apply, "worktrees": found}


async def _worktree_discard(api: Api, req: rq.WorktreeOf) -> Any:
    return await _review(api, req, "discard", review.discard)


async def _review(
    api: Api,
    req: rq.WorktreeOf,
    action: str,
    act: Callable[[TaskState, str], ev.Event],
    checked_seq: int | None = None,
) -> Any:
    """Merge or discard, serialised with everything else the task does through its guarded
    sequence: ReviewStarted is appended only if the task did not move since it was checked
    (while it stands, the task cannot be queued or continued), then git acts, then the fact
    (or ReviewEnded, when git refused) is recorded."""
    origin = ev.Origin(
        node_id=api.node_id, correlation_id=req.request_id or ev.new_event_id(), actor=req.actor
    )
    async with api.review_lock:
        task, repo = await api.query(lambda p: review.task_and_repo(p, req.task))
        review.check(task, action)
        if checked_seq is not None and task.last_seq != checked_seq:
            raise Conflict(f"task {task.id[:8]} changed since it was checked")
        started = ev.envelop(ev.ReviewStarted(action=action, node_id=api.node_id), task.id, origin)
        try:
            seqs = await api.log.append([started], task.last_seq)
        except ev.ConcurrencyError:
            raise Conflict(
                f"task {task.id[:8]} changed while the {action} was being checked; "
                "nothing was changed, look at it again"
            ) from None
        try:
            event = await review.in_thread(lambda: act(task, repo))
        except BaseException as exc:
            ended = ev.ReviewEnded(action=action, error=_one_line(str(exc)) or type(exc).__name__)
            await api.log.append([ev.envelop(ended, task.id, origin)], None)
            raise
        seqs = await api.log.append([ev.envelop(event, task.id, origin)], None)
        await api.feed.wait_for(seqs[-1])
        return await api.feed.run_in_projection(lambda p: q.task_detail(p, task.id))


async def _board(api: Api, req: rq.Board) -> Any:
    def read(p: Projection) -> dict[str, Any]:
        data = q.board(p)
        if req.cards:
            list_id = q.resolve_list(p, req.list_ref).id if req.list_ref is not None else None
            data["columns"] = q.board_columns(p, req.cards, req.column, list_id)
        return data

    data: dict[str, Any] = await api.query(read)
    subjects = [
        ev.output_subject(row["id"], row["run_number"])
        for row in data["working"]
        if row["run_number"] is not None
    ]
    lines = await last_lines(api.nc.jetstream(), subjects)
    for row in data["working"]:
        line = None
        if row["run_number"] is not None:
            line = lines.get(ev.output_subject(row["id"], row["run_number"]))
        row["last_line"] = summarize(line)
    data["node"] = api._info()
    return data


async def _subtask_add(api: Api, req: rq.AddSubtasks) -> Any:
    return await api.command(req, lambda d: d.add_subtasks(req))


async def _subtask_done(api: Api, req: rq.MarkSubtasks) -> Any:
    return await api.command(req, lambda d: d.mark_subtasks(req, done=True))


async def _subtask_undo(api: Api, req: rq.MarkSubtasks) -> Any:
    return await api.command(req, lambda d: d.mark_subtasks(req, done=False))


async def _tasks(api: Api, req: rq.ListTasks) -> pages.Pages:
    """Pages of tasks, each read from the projection when the client gets to it: the next
    page starts after the last task of the one before (created_at, id), not at an offset."""

    def start(p: Projection) -> tuple[str | None, str | None]:
        list_id = q.resolve_list(p, req.list_ref).id if req.list_ref is not None else None
        q.check_status(req.status)
        after = q.resolve_task(p, req.after).id if req.after is not None else None
        return list_id, after

    run = await api.at(req.as_of)
    list_id, after = await run(start)

    async def read() -> AsyncIterator[list[Any]]:
        cursor, offset, left = after, req.offset, req.limit
        while left is None or left > 0:
            size = pages.PAGE_ROWS if left is None else min(pages.PAGE_ROWS, left)
            page = functools.partial(
                q.tasks_filtered, list_id=list_id, status=req.status, limit=size,
                offset=offset, after=cursor, archived=req.archived,
            )  # fmt: skip
            rows = await run(page)
            yield rows
            if len(rows) < size:
                return
            cursor, offset = rows[-1]["id"], 0
            left = None if left is None else left - len(rows)

    return pages.Pages(read())


async def _audit(api: Api, req: rq.Audit) -> pages.Pages:
    task_id = await api.query(lambda p: q.resolve_task(p, req.task).id)

    async def read() -> AsyncIterator[list[Any]]:
        after = 0
        while True:
            page = functools.partial(
                q.audit, task_id=task_id, after_seq=after, limit=pages.PAGE_ROWS
            )
            rows = await api.feed.run_in_projection(page)
            yield rows
            if len(rows) < pages.PAGE_ROWS:
                return
            after = rows[-1]["seq"]

    return pages.Pages(read())


async def _sql(api: Api, req: rq.RunSql) -> pages.Pages:
    """The query runs once, in the projector; its rows become JSON page by page outside it."""
    run = await api.at(req.as_of)
    columns, rows = await run(lambda p: q.run_sql(p, req.query, req.timeout_s, convert=False))

    async def read() -> AsyncIterator[list[Any]]:
        loop = asyncio.get_running_loop()
        for start in range(0, len(rows), pages.PAGE_ROWS):
            chunk = rows[start : start + pages.PAGE_ROWS]
            yield await loop.run_in_executor(None, q.jsonable_rows, chunk)

    return pages.Pages(read(), columns)


async def _stats(api: Api, req: rq.RunStats) -> Any:
    return await api.query(lambda p: q.run_stats(p, req.by, req.since))


async def _export(api: Api, req: rq.ExportParquet) -> Any:
    """Written by the projector, the only opener of the file, from one state of it: commands
    and queries wait meanwhile (docs/benchmarks.md, "Analytics")."""
    if "\0" in req.dir:
        raise Invalid("export folder: a path cannot hold a NUL character")
    if not os.path.isabs(req.dir):
        raise Invalid(f"export folder {q.shown(req.dir, 200)} is not an absolute path")
    folder = Path(os.path.normpath(req.dir))
    return await api.query(lambda p: export_parquet(p, folder))


async def _rebuild(api: Api, req: rq.Rebuild) -> Any:
    return await api.rebuild()


async def _info(api: Api, req: rq.Info) -> Any:
    info = api._info()
    info["last_seq"] = await api.log.last_seq()
    info["checkpoint_seq"] = api.feed.checkpoint
    return info


ROUTES: dict[str, tuple[type[Any], Handler]] = {
    "list.add": (rq.CreateList, _list_add),
    "list.config": (rq.ConfigureList, _list_config),
    "list.ls": (rq.ListLists, _list_ls),
    "list.archive": (rq.ListOf, _list_archive),
    "list.unarchive": (rq.ListOf, _list_unarchive),
    "list.delete": (rq.DeleteList, _list_delete),
    "task.add": (rq.AddTask, _task_add),
    "task.show": (rq.ShowTask, _task_show),
    "task.edit": (rq.EditTask, _task_edit),
    "task.queue": (rq.TaskIds, _task_queue),
    "task.unqueue": (rq.TaskIds, _task_unqueue),
    "task.cancel": (rq.TaskIds, _task_cancel),
    "task.continue": (rq.ContinueTask, _task_continue),
    "task.archive": (rq.TaskIds, _task_archive),
    "task.unarchive": (rq.TaskIds, _task_unarchive),
    "task.delete": (rq.DeleteTasks, _task_delete),
    "task.subtask.add": (rq.AddSubtasks, _subtask_add),
    "runs": (rq.RunsOfTask, _runs),
    "worktree.diff": (rq.WorktreeOf, _worktree_diff),
    "worktree.merge": (rq.WorktreeOf, _worktree_merge),
    "worktree.discard": (rq.WorktreeOf, _worktree_discard),
    "worktree.prune": (rq.PruneWorktrees, _worktree_prune),
    "task.subtask.done": (rq.MarkSubtasks, _subtask_done),
    "task.subtask.undo": (rq.MarkSubtasks, _subtask_undo),
    "tasks": (rq.ListTasks, _tasks),
    "audit": (rq.Audit, _audit),
    "sql": (rq.RunSql, _sql),
    "stats": (rq.RunStats, _stats),
    "export": (rq.ExportParquet, _export),
    "projections.rebuild": (rq.Rebuild, _rebuild),
    "info": (rq.Info, _info),
    "board": (rq.Board, _board),
}


def _answerable(reply: str | None) -> bool:
    """Whether a request is one to act on: it asks for its reply on an inbox. The node answers
    with its own rights, and the server does not check a reply subject against the asker's:
    a reply named `claudedo.evt.X` would have the node append to the log for the asker. A
    message with no reply is no request either (a stream's message or heartbeat that a
    reader's consumer was told to deliver onto the API's subjects). Operators ask from their
    own account, whose requests the server hands on with a reply of its making (`_R_.`) that
    leads back into that account alone (decision 0022)."""
    return reply is not None and reply.startswith(("_INBOX.", "_R_."))
