"""The board as web pages (decision 0025): Starlette, pages rendered on the server with
Jinja2, every action a request to the node's API with the same validation as the CLI.

Access takes the home's web token: the login link (`/login?token=...`, printed by `claudedo
up` and opened by `claudedo open`) sets it as a cookie (HttpOnly, SameSite=Strict, so other
sites cannot send it); a program may send it as `Authorization: Bearer <token>`. Anything
else is refused with 401 before any API request is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from claudedo_actors.agent.run_output import log_path
from claudedo_actors.web import views
from claudedo_actors.web.live import KEEPALIVE_S, Changes
from events.errors import ClaudeDoError

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]
# Follow a run's lines from the output stream: (task id, run number, on_line) -> whether the
# run is over (claudedo_actors.agent.follow.follow_output, bound to the node's NATS).
Follow = Callable[[str, int, Callable[[bytes], None]], Awaitable[bool]]

COOKIE = "claudedo_token"
# The board's columns, in order; a task in another status (claimed) shows as running.
COLUMNS = ("draft", "queued", "running", "done", "failed", "cancelled")
# Cards a column shows at first; `?cards=N` shows more (up to CARDS_MAX).
CARDS = 50
CARDS_MAX = 1000
# Agent settings of the task forms, with how a field's text becomes the API's value.
SETTINGS: dict[str, Callable[[str], Any]] = {
    "model": str, "permission_mode": str, "max_turns": int, "max_budget_usd": float,
    "timeout_s": float, "system_prompt": str, "agent_path": str,
}  # fmt: skip
_TEMPLATES = Path(__file__).resolve().parent / "templates"


def make_app(
    token: str,
    call: Call,
    actor: str,
    changes: Changes | None = None,
    logs_dir: Path | None = None,
    follow: Follow | None = None,
) -> Starlette:
    """The board's ASGI app: `call(verb, payload)` asks the node's API, as `actor`;
    `changes` feeds the pages' live updates; a run's lines are read from its file in
    `logs_dir`, or followed live with `follow`."""
    changes = changes or Changes()
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(default=True)
    )
    env.globals["highlight_css"] = views.highlight_css()

    async def page(
        name: str, status: int = 200, request: Request | None = None, **context: Any
    ) -> HTMLResponse:
        """A page, or with `?fragment=1` only what it shows live (the header's figures and
        its `main`)."""
        fragment = request is not None and request.query_params.get("fragment") == "1"
        try:
            head = await ask("board", {})
        except ClaudeDoError:
            head = None
        html = env.get_template(name).render(fragment=fragment, head=head, **context)
        return HTMLResponse(html, status_code=status)

    def allowed(request: Request) -> bool:
        given = request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    async def ask(verb: str, payload: dict[str, Any]) -> Any:
        return await call(verb, {**payload, "actor": actor})

    async def act(
        request: Request, verb: str, payload: dict[str, Any], back: str, on_task: bool = False
    ) -> Response:
        """Ask the API to do something, then go `back`; refused: the board (or, `on_task`,
        the task's page) with the error."""
        try:
            await ask(verb, payload)
        except ClaudeDoError as exc:
            return await refused(request, exc.message, on_task)
        return RedirectResponse(back, status_code=303)

    async def refused(request: Request, message: str, on_task: bool) -> Response:
        if on_task:
            return await task_page(request, error=message, status=400)
        return await board(request, error=message, status=400)

    async def not_found(exc: ClaudeDoError) -> Response:
        return await page("error.html", 404 if exc.code == "not_found" else 400, error=exc.message)

    async def login(request: Request) -> Response:
        given = request.query_params.get("token", "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("error: this login link is not this board's\n", 403)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def board(request: Request, error: str | None = None, status: int = 200) -> Response:
        cards = _number(request.query_params.get("cards"), CARDS, CARDS_MAX)
        lists = await ask("list.ls", {})
        data = await ask("board", {"cards": cards})
        lines = {row["id"]: row.get("last_line") or "" for row in data["working"]}
        counts = data["counts"]
        shown = {c: counts.get(c, 0) for c in COLUMNS}
        shown["running"] += counts.get("claimed", 0)
        return await page(
            "board.html", status, request, lists=lists, columns=data["columns"], counts=shown,
            cards=cards, more=min(cards * 4, CARDS_MAX), lines=lines, error=error,
            settings=SETTINGS,
        )  # fmt: skip

    async def task_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        try:
            task = await ask("task.show", {"task": request.path_params["task_id"]})
            events = await ask("audit", {"task": task["id"]})
        except ClaudeDoError as exc:
            return await not_found(exc)
        rows, totals = views.timeline(events)
        output = output_of(task, request.query_params.get("run"))
        return await page(
            "task.html", status, request, task=task, error=error, timeline=rows,
            totals=totals, output=output, settings=SETTINGS,
            pinned=request.query_params.get("run") is not None,
        )  # fmt: skip

    def output_of(task: dict[str, Any], chosen: str | None) -> dict[str, Any] | None:
        """The run whose output the page shows (the latest, or `?run=N`), its entries from
        its file so far, and whether more are to come live."""
        runs = task["runs"]
        if not runs:
            return None
        run = runs[-1]
        if chosen is not None and chosen.isascii() and chosen.isdigit():
            run = next((r for r in runs if r["run_number"] == int(chosen)), run)
        lines = _read_lines(_log(task["id"], run))
        return {
            "run": run,
            "entries": views.transcript(lines) if lines is not None else [],
            "count": len(lines or []),
            "in_file": lines is not None,
            "live": run["finished_at"] is None or lines is None,
        }

    def _log(task_id: str, run: dict[str, Any]) -> Path | None:
        return log_path(logs_dir, task_id, run["run_number"]) if logs_dir else None

    async def raw_log(request: Request) -> Response:
        task_id, number = request.path_params["task_id"], request.path_params["run"]
        try:
            task = await ask("task.show", {"task": task_id})
        except ClaudeDoError as exc:
            return await not_found(exc)
        run = next((r for r in task["runs"] if r["run_number"] == number), None)
        path = _log(task["id"], run) if run else None
        if run is None or path is None or not path.is_file():
            what = "no such run" if run is None else "this run's log is not on this machine"
            return await page("error.html", 404, error=f"{what} (task {task['id']}, run {number})")
        headers = {"Content-Disposition": f'inline; filename="{path.name}"'}
        return FileResponse(path, media_type="text/plain; charset=utf-8", headers=headers)

    async def output_stream(request: Request) -> Response:
        """Server-Sent Events: the run's lines after the first `after` (from Last-Event-ID,
        or `?after=`), each as the HTML of its entries; `end` when the run is over."""
        task_id, number = request.path_params["task_id"], request.path_params["run"]
        seen = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        after = int(seen) if seen.isascii() and seen.isdigit() else 0
        try:
            task = await ask("task.show", {"task": task_id})
        except ClaudeDoError as exc:
            return PlainTextResponse(f"error: {exc.message}\n", 404)
        entry = env.get_template("entries.html")
        return StreamingResponse(
            _follow_lines(follow, task["id"], number, after, entry.render, changes),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def add_task(request: Request) -> Response:
        form = await _form(request)
        subtasks = [s.strip() for s in str(form.get("subtasks", "")).splitlines() if s.strip()]
        payload: dict[str, Any] = {
            "list": str(form.get("list", "")),
            "title": str(form.get("title", "")),
            "description": str(form.get("description", "")),
            "subtasks": subtasks,
            "queue": form.get("queue") == "on",
        }
        for name, convert in SETTINGS.items():
            if str(form.get(name, "")).strip():
                payload[name] = _typed(form[name].strip(), convert)
        return await act(request, "task.add", payload, "/")

    async def edit_task(request: Request) -> Response:
        """Only what the form changed is sent: a cleared setting is null, as `--model ''`."""
        task_id = request.path_params["task_id"]
        form = await _form(request)
        try:
            task = await ask("task.show", {"task": task_id})
        except ClaudeDoError as exc:
            return await not_found(exc)
        payload: dict[str, Any] = {"task": task["id"]}
        for name in ("title", "description"):
            value = form.get(name)
            if value is not None and value.replace("\r\n", "\n") != task[name]:
                payload[name] = value.replace("\r\n", "\n")
        for name, convert in SETTINGS.items():
            value = form.get(name)
            if value is None or value.strip() == _shown_setting(task.get(name)):
                continue
            payload[name] = _typed(value.strip(), convert) if value.strip() else None
        here = f"/tasks/{task['id']}"
        if len(payload) == 1:
            return RedirectResponse(here, status_code=303)
        return await act(request, "task.edit", payload, here, on_task=True)

    async def add_subtasks(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        titles = [s.strip() for s in (await _form(request)).get("titles", "").splitlines()]
        payload = {"task": task_id, "titles": [t for t in titles if t]}
        return await act(request, "task.subtask.add", payload, f"/tasks/{task_id}", True)

    async def mark_subtask(request: Request) -> Response:
        task_id, ref = request.path_params["task_id"], request.path_params["ref"]
        verb = {"done": "task.subtask.done", "undo": "task.subtask.undo"}.get(
            request.path_params["mark"]
        )
        if verb is None:
            return await page("error.html", 404, error="no such sub-task action")
        payload = {"task": task_id, "subtasks": [ref]}
        return await act(request, verb, payload, f"/tasks/{task_id}", on_task=True)

    async def add_list(request: Request) -> Response:
        form = await _form(request)
        payload: dict[str, Any] = {"name": str(form.get("name", ""))}
        if str(form.get("dir", "")).strip():
            payload["dir"] = str(form.get("dir", "")).strip()
        return await act(request, "list.add", payload, "/")

    async def diff_page(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            task = await ask("task.show", {"task": task_id})
            diff = await ask("worktree.diff", {"task": task["id"]})
        except ClaudeDoError as exc:
            return await not_found(exc)
        files = views.diff_files(diff["diff"])
        return await page("diff.html", 200, request, task=task, diff=diff, files=files)

    async def task_action(request: Request) -> Response:
        task_id, action = request.path_params["task_id"], request.path_params["action"]
        # Back to the page the action was taken on: only its path, never another site.
        back = urllib.parse.urlsplit(request.headers.get("referer", "")).path
        back = back if back.startswith("/") and not back.startswith("//") else "/"
        if action in _MANY:
            return await act(request, _MANY[action], {"tasks": [task_id]}, back)
        here = f"/tasks/{task_id}"
        if action in _ONE:
            return await act(request, _ONE[action], {"task": task_id}, here, on_task=True)
        if action == "continue":
            payload = {"task": task_id, "prompt": (await _form(request)).get("prompt", "")}
            return await act(request, "task.continue", payload, here, on_task=True)
        if action == "edit":
            return await edit_task(request)
        if action == "subtasks":
            return await add_subtasks(request)
        return await page("error.html", 404, error=f"no action {action!r}")

    async def events(request: Request) -> Response:
        """Server-Sent Events: one `changed` event each time the projection moved on."""
        seen = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        after = int(seen) if seen.isascii() and seen.isdigit() else 0
        return StreamingResponse(
            changes.stream(after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    routes = [
        Route("/login", login),
        Route("/events", events),
        Route("/", board),
        Route("/tasks", add_task, methods=["POST"]),
        Route("/lists", add_list, methods=["POST"]),
        Route("/tasks/{task_id}", task_page),
        Route("/tasks/{task_id}/diff", diff_page),
        Route("/tasks/{task_id}/runs/{run:int}/log", raw_log),
        Route("/tasks/{task_id}/runs/{run:int}/stream", output_stream),
        Route("/tasks/{task_id}/subtasks/{ref}/{mark}", mark_subtask, methods=["POST"]),
        Route("/tasks/{task_id}/{action}", task_action, methods=["POST"]),
    ]

    async def token_required(request: Request, call_next: Any) -> Response:
        if request.url.path != "/login" and not allowed(request):
            return PlainTextResponse(
                "error: no access: open the login link `claudedo open` prints\n", 401
            )
        if request.method == "POST" and not _same_origin(request):
            return PlainTextResponse("error: a request from another site is refused\n", 403)
        response: Response = await call_next(request)
        return response

    return Starlette(
        routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=token_required)]
    )


async def _follow_lines(
    follow: Follow | None,
    task_id: str,
    run_number: int,
    after: int,
    render: Callable[..., str],
    changes: Changes,
) -> AsyncIterator[str]:
    """The text of an output event stream: line `n` (1-based) as event id `n`, the first
    `after` skipped (the page has them), then `end`. Without `follow`, only `end`."""
    yield "retry: 1000\n\n"
    if follow is None:
        yield "event: end\ndata: \n\n"
        return
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    count = 0

    def on_line(line: bytes) -> None:
        queue.put_nowait(line)

    async def run() -> None:
        try:
            if await follow(task_id, run_number, on_line):
                queue.put_nowait(None)
        except Exception:  # NATS gone: the stream ends, the page reconnects from its last id
            queue.put_nowait(b"")

    task = asyncio.create_task(run())
    try:
        while not changes.closed:
            try:
                line = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if line is None:
                yield "event: end\ndata: \n\n"
                return
            if line == b"" and task.done():
                return
            count += 1
            if count <= after:
                continue
            html = render(entries=views.transcript([line]))
            data = "".join(f"data: {part}\n" for part in html.split("\n"))
            yield f"id: {count}\nevent: line\n{data}\n"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# Actions on tasks, by the verb that does them: on a list of tasks, or on one task.
_MANY = {"queue": "task.queue", "unqueue": "task.unqueue", "cancel": "task.cancel"}
_ONE = {"merge": "worktree.merge", "discard": "worktree.discard"}


def _number(text: str | None, default: int, most: int) -> int:
    if text and text.isascii() and text.isdigit() and int(text) > 0:
        return min(int(text), most)
    return default


def _typed(text: str, convert: Callable[[str], Any]) -> Any:
    """A form field as the API's type; left as text when it is not one, so the API's
    validation says what is wrong with it, as it does to the CLI."""
    try:
        return convert(text)
    except ValueError:
        return text


def _shown_setting(value: Any) -> str:
    """A setting as its form field shows it."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_lines(path: Path | None) -> list[bytes] | None:
    """The lines of a run's file (None: not on this machine)."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data.splitlines()


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the board posts no files); the last of a repeated one."""
    body = await request.body()
    if len(body) > _FORM_MAX:
        return {}
    fields = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(fields)


_FORM_MAX = 1 << 20


def _same_origin(request: Request) -> bool:
    """A POST carries no Origin (an old client) or this board's own."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
