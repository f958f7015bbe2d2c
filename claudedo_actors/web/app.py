"""The board as web pages (decision 0025): Starlette, pages rendered on the server with
Jinja2, every action a request to the node's API with the same validation as the CLI.

Access takes the home's web token: the login link (`/login?token=...`, printed by `claudedo
up` and opened by `claudedo open`) sets it as a cookie (HttpOnly, SameSite=Strict, so other
sites cannot send it); a program may send it as `Authorization: Bearer <token>`. Anything
else is refused with 401 before any API request is made.
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from claudedo_actors.web.live import Changes
from events.errors import ClaudeDoError

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]

COOKIE = "claudedo_token"
# The board's columns, in order; a task in another status (claimed) shows as running.
COLUMNS = ("draft", "queued", "running", "done", "failed", "cancelled")
_SHOWN_AS = {"claimed": "running"}
_TEMPLATES = Path(__file__).resolve().parent / "templates"


def make_app(token: str, call: Call, actor: str, changes: Changes | None = None) -> Starlette:
    """The board's ASGI app: `call(verb, payload)` asks the node's API, as `actor`;
    `changes` feeds the pages' live updates."""
    changes = changes or Changes()
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(default=True)
    )

    def page(
        name: str, status: int = 200, request: Request | None = None, **context: Any
    ) -> HTMLResponse:
        """A page, or with `?fragment=1` only what it shows live (its `main`)."""
        fragment = request is not None and request.query_params.get("fragment") == "1"
        html = env.get_template(name).render(fragment=fragment, **context)
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
            if on_task:
                return await task_page(request, error=exc.message, status=400)
            return await board(request, error=exc.message, status=400)
        return RedirectResponse(back, status_code=303)

    async def login(request: Request) -> Response:
        given = request.query_params.get("token", "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("error: this login link is not this board's\n", 403)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def board(request: Request, error: str | None = None, status: int = 200) -> Response:
        lists = await ask("list.ls", {})
        tasks = await ask("tasks", {})
        names = {row["id"]: row["name"] for row in lists}
        columns: dict[str, list[dict[str, Any]]] = {c: [] for c in COLUMNS}
        for task in tasks:
            shown = _SHOWN_AS.get(task["status"], task["status"])
            columns.setdefault(shown, []).append({**task, "list_name": names.get(task["list_id"])})
        return page("board.html", status, request, lists=lists, columns=columns, error=error)

    async def task_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        try:
            task = await ask("task.show", {"task": request.path_params["task_id"]})
        except ClaudeDoError as exc:
            return page("error.html", 404 if exc.code == "not_found" else 400, error=exc.message)
        return page("task.html", status, request, task=task, error=error)

    async def add_task(request: Request) -> Response:
        form = await _form(request)
        subtasks = [s.strip() for s in str(form.get("subtasks", "")).splitlines() if s.strip()]
        payload = {
            "list": str(form.get("list", "")),
            "title": str(form.get("title", "")),
            "description": str(form.get("description", "")),
            "subtasks": subtasks,
            "queue": form.get("queue") == "on",
        }
        return await act(request, "task.add", payload, "/")

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
            return page("error.html", 404 if exc.code == "not_found" else 400, error=exc.message)
        return page("diff.html", 200, request, task=task, diff=diff, files=_files(diff["diff"]))

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
        return page("error.html", 404, error=f"no action {action!r}")

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


# Actions on tasks, by the verb that does them: on a list of tasks, or on one task.
_MANY = {"queue": "task.queue", "unqueue": "task.unqueue", "cancel": "task.cancel"}
_ONE = {"merge": "worktree.merge", "discard": "worktree.discard"}


def _files(diff: str) -> list[tuple[str, str]]:
    """A unified diff split per file: (path, its part of the diff)."""
    files: list[tuple[str, str]] = []
    for part in diff.split("\ndiff --git ")[0:]:
        if not part.strip():
            continue
        text = part if part.startswith("diff --git ") else "diff --git " + part
        first = text.split("\n", 1)[0]
        path = first.rsplit(" b/", 1)[-1] if " b/" in first else first
        files.append((path, text))
    return files


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
