"""The `claudedo` command line: one node command, the rest are requests to the node."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from claudedo_actors.api import verbs as rq
from claudedo_actors.cli.literal import plain
from events._base import Positive, Seconds
from events.errors import ClaudeDoError

# Kept import-light (no typer/pydantic, no nats until a request is sent): every command is a
# new process, and its start-up is most of a round trip.

_HOME_HELP = "The node's home folder (default: $CLAUDEDO_HOME, else a per-user data folder)."

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CLAUDEDO_HOME",
    help=_HOME_HELP,
)


def _as_of_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """`--as-of`: a bare integer is a stream sequence, anything else an ISO 8601 time (UTC
    when it has no offset), sent as the API takes it."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    return _IsoTime().convert(text, param, ctx).isoformat()


as_of_option = click.option(
    "--as-of", "as_of", metavar="SEQ|TIME", callback=_as_of_value,
    help="As it was right after stream sequence SEQ, or at TIME (ISO 8601; UTC without an "
    "offset).",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")
quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="Print only the new id (for a shell variable)."
)
archived_option = click.option(
    "--archived", is_flag=True, help="Also the archived and deleted ones."
)


if TYPE_CHECKING:
    from claudedo_actors.cli.client import NodeClient

    _ParamBase = click.ParamType[Any]  # generic in click >= 8.2 only
else:
    _ParamBase = click.ParamType


def _meta(number_type: Any) -> Any:
    """The msgspec Meta (ge/gt/le) of one of the requests' annotated number types."""
    return number_type.__metadata__[0]


def _int_range(number_type: Any) -> click.IntRange:
    meta = _meta(number_type)
    return click.IntRange(meta.ge, meta.le)


class _FiniteFloat(_ParamBase):
    """A finite number in (low, high]: NaN and infinity would travel as JSON null."""

    name = "number"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    @classmethod
    def of(cls, number_type: Any) -> _FiniteFloat:
        """The range of a request's type (gt, le), so the CLI and the API agree."""
        meta = _meta(number_type)
        return cls(meta.gt, meta.le)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            return value  # '' clears a setting in a change
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low < number <= self.high:
            self.fail(f"{value} is not in the range ({self.low:g}, {self.high:g}]", param, ctx)
        return number


class _BoundedInt(_ParamBase):
    """An integer in [low, high], or '' (clears a setting in a change)."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    @classmethod
    def of(cls, number_type: Any) -> _BoundedInt:
        """The range of a request's type (ge, le), so the CLI and the API agree."""
        meta = _meta(number_type)
        return cls(meta.ge, meta.le)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{value} is not in the range [{self.low}, {self.high}]", param, ctx)
        return number


def agent_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options for the agent settings a list or a task carries (task > list > default)."""
    options = [
        click.option("--model", help="Claude model for the agent."),
        click.option("--system-prompt", help="Appended to the agent's system prompt."),
        click.option("--agent", help="Agent definition file (Markdown with front matter)."),
        click.option("--permission-mode", help="Claude Code permission mode for the agent."),
        click.option(
            "--allowed-tool", "allowed_tools", multiple=True, help="Tool allowed unasked (repeat)."
        ),
        click.option(
            "--max-budget-usd", type=_FiniteFloat.of(rq.Budget), help="Cost limit of a run, in USD."
        ),
        click.option("--max-turns", type=_BoundedInt.of(Positive), help="Turn limit of a run."),
        click.option(
            "--timeout",
            type=_FiniteFloat.of(Seconds),
            help="Wall-clock limit of a run, in seconds.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(opts: dict[str, Any], clearable: bool = False) -> dict[str, Any]:
    """The agent settings given on the command line. In a change, '' clears a setting."""
    values = {
        "model": opts.pop("model"),
        "system_prompt": opts.pop("system_prompt"),
        "agent_path": opts.pop("agent"),
        "permission_mode": opts.pop("permission_mode"),
        "allowed_tools": list(opts.pop("allowed_tools")) or None,
        "max_budget_usd": opts.pop("max_budget_usd"),
        "max_turns": opts.pop("max_turns"),
        "timeout_s": opts.pop("timeout"),
    }
    if values["agent_path"]:
        values["agent_path"] = _abspath(values["agent_path"])
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = None if clearable and value == "" else value
    return out


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _request(home: Path | None, verb: str, payload: dict[str, Any]) -> Any:
    from claudedo_actors.cli.client import NodeClient
    from claudedo_actors.node.home import resolve_home

    return NodeClient(resolve_home(home)).request(verb, payload)


def _parts(home: Path | None, verb: str, payload: dict[str, Any]) -> Iterator[Any]:
    """The reply's parts as they arrive (a listing's pages)."""
    from claudedo_actors.cli.client import NodeClient
    from claudedo_actors.node.home import resolve_home

    return NodeClient(resolve_home(home)).parts(verb, payload)


def _given(**payload: Any) -> dict[str, Any]:
    """The options that were given (None: not given)."""
    return {k: v for k, v in payload.items() if v is not None}


def _emit(data: Any, as_json: bool, view: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    from claudedo_actors.cli import render

    getattr(render, view)(data)


def _emit_new(data: Any, as_json: bool, quiet: bool, view: str) -> None:
    """What an `add` made: JSON, only its id (`--quiet`), or a line saying what was made."""
    if quiet and not as_json:
        sys.stdout.write(data["id"] + "\n")
        return
    _emit(data, as_json, view)


def _emit_pages(pages: Iterable[list[Any]], as_json: bool, view: str) -> None:
    """A listing printed as its pages arrive: a table page by page (`render.<view>_pages`),
    or one JSON array written a row at a time."""
    if as_json:
        _write_json_array(row for page in pages for row in page)
        return
    from claudedo_actors.cli import render

    getattr(render, f"{view}_pages")(pages)


def _write_json_array(rows: Iterable[Any]) -> None:
    """`rows` as `json.dumps(list(rows), indent=2)` writes them, without holding them all."""
    out = sys.stdout
    first = True
    for row in rows:
        text = json.dumps(row, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        out.write(("[\n  " if first else ",\n  ") + text)
        first = False
    out.write("[]\n" if first else "\n]\n")


class _StdoutClosed(Exception):
    """Whoever read stdout went away; not an OSError, so click leaves it to `main`."""


class _Commands(click.Group):
    """The top group: a closed stdout stops any command the same quiet way (`main`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _StdoutClosed() from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", package_name="claudedo", prog_name="claudedo",
                      message="%(prog)s %(version)s")  # fmt: skip
@click.option(
    "--home", "top_home", type=click.Path(file_okay=False, path_type=Path), help=_HOME_HELP
)
def app(top_home: Path | None) -> None:
    """ClaudeDo: a to-do board whose tasks are done by the Claude Code CLI."""
    if top_home is not None:
        # Every command's own --home reads CLAUDEDO_HOME when not given: this is its default.
        os.environ["CLAUDEDO_HOME"] = str(top_home)


# --- the node ------------------------------------------------------------------------------


@app.command()
@home_option
@click.option(
    "--nats",
    envvar="CLAUDEDO_NATS_URL",
    help="Use this NATS server (e.g. nats://host:4222) instead of an embedded one.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Tasks this node runs at once (0: serve the API and projection only).",
)
@click.option(
    "--claude-bin",
    envvar="CLAUDEDO_CLAUDE_BIN",
    help="The Claude Code binary (default: claude on PATH).",
)
@click.option(
    "--creds",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLAUDEDO_NODE_CREDS",
    help="With --nats: the node's credentials file (see `claudedo creds`).",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    envvar="CLAUDEDO_REPLICAS",
    help="Servers that keep each stream when this node creates them (default: min(3, the "
    "cluster's size)).",
)
@click.option(
    "--web",
    envvar="CLAUDEDO_WEB",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="Serve the board here (port 0: a free one).",
)
@click.option("--no-web", is_flag=True, help="Do not serve the board.")
def up(
    home: Path | None,
    nats: str | None,
    slots: int,
    claude_bin: str | None,
    creds: Path | None,
    replicas: int | None,
    web: str,
    no_web: bool,
) -> None:
    """Start a node: embedded NATS (unless --nats), projector and API. Stops on Ctrl-C."""
    import logging

    from claudedo_actors.node.home import resolve_home
    from claudedo_actors.node.node import Node

    logging.basicConfig(
        level=os.environ.get("CLAUDEDO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("pykka").setLevel(logging.WARNING)
    if creds is not None and nats is None:
        raise ClaudeDoError(
            "--creds is for a given server (--nats): the embedded one uses the home's own",
            code="invalid",
        )
    from claudedo_actors.web.server import parse_address

    parse_address(web)  # a bad address is refused before anything starts
    address = None if no_web else web
    node = Node(resolve_home(home), nats, slots, claude_bin, replicas, creds, address)
    if slots:  # once the node is up: a node that cannot start says only why
        node.on_ready.append(lambda: _warn_if_missing(claude_bin or "claude"))
    code = node.run()
    if code:
        raise SystemExit(code)


def _warn_if_missing(agent: str) -> None:
    """One line on stderr when the agent binary cannot be run: every task would fail with
    `spawn_failed`, and the node is still worth starting (its API, the board, reviews)."""
    import shutil

    if shutil.which(agent) is None:
        where = "is not an executable file" if os.sep in agent else "is not on PATH"
        sys.stderr.write(
            f"warning: the agent binary {plain(agent)!r} {where}: runs will fail with "
            "spawn_failed (install Claude Code, or give --claude-bin PATH)\n"
        )


@app.command("open")
@home_option
@click.option("--print", "print_only", is_flag=True, help="Print the login link, open nothing.")
def open_board(home: Path | None, print_only: bool) -> None:
    """Open the board of the node running on this home in a browser (its login link holds
    the home's web token: share it as you would a password)."""
    import webbrowser

    from claudedo_actors.node.home import Home, resolve_home

    data = _request(home, "info", {})
    if not data.get("web_url"):
        raise ClaudeDoError("this node serves no board (it was started with --no-web)")
    link = f"{data['web_url']}/login?token={Home(resolve_home(home)).web_token()}"
    if print_only or not webbrowser.open(link):
        sys.stdout.write(link + "\n")


@app.command()
@home_option
@json_option
def info(home: Path | None, as_json: bool) -> None:
    """The node: id, NATS URL, stream, last sequence, projection checkpoint, slots."""
    _emit(_request(home, "info", {}), as_json, "info")


@app.command()
@click.argument("role", type=click.Choice(["node", "operator", "reader"]))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a copy here (0600); it must not exist yet.",
)
@home_option
def creds(role: str, out: Path | None, home: Path | None) -> None:
    """A NATS role's credentials file, for another program or user (never printed).

    node: append events, serve the API. operator: call the API, read events and output.
    reader: read and replay events and output, nothing else.
    """
    from claudedo_actors.node.home import Home, resolve_home
    from claudedo_actors.node.roles import HomeCredentials

    credentials = HomeCredentials(Home(resolve_home(home)).creds_dir)
    credential = credentials.existing(role)
    if credential is None:
        raise ClaudeDoError(
            f"no {role} credentials in this home yet (a first `claudedo up` makes them)",
            code="not_found",
        )
    if out is None:
        click.echo(f"{role} credentials: {credentials.path(role)}")
        return
    try:
        credential.write(out, replace=False)
    except FileExistsError:
        raise ClaudeDoError(
            f"{out} exists already: remove it or choose another --out", "invalid"
        ) from None
    except OSError as exc:
        raise ClaudeDoError(f"cannot write {out}: {exc.strerror}", code="invalid") from None
    click.echo(f"wrote the {role} credentials to {out} (0600)")


# --- lists ---------------------------------------------------------------------------------


@app.group("list")
def list_group() -> None:
    """Lists: boards whose tasks run in a git repository."""


@list_group.command("add")
@click.argument("name")
@click.option("--dir", "dir_", help="Git work tree (with a commit) the tasks run in.")
@agent_options
@home_option
@json_option
@quiet_option
def list_add(
    name: str, dir_: str | None, home: Path | None, as_json: bool, quiet: bool, **opts: Any
) -> None:
    """Create a list, optionally on a git repository (--dir)."""
    payload = {"name": name, **_given(dir=dir_ and _abspath(dir_)), **_settings(opts)}
    _emit_new(_request(home, "list.add", payload), as_json, quiet, "list_added")


@list_group.command("ls")
@archived_option
@home_option
@json_option
def list_ls(archived: bool, home: Path | None, as_json: bool) -> None:
    """Every list (but archived and deleted ones, unless --archived)."""
    _emit(_request(home, "list.ls", _given(archived=archived or None)), as_json, "lists")


@list_group.command("config")
@click.argument("list_ref", metavar="LIST")
@click.option("--name", help="New name.")
@click.option("--dir", "dir_", help="New git work tree ('' for none).")
@agent_options
@home_option
@json_option
def list_config(
    list_ref: str,
    name: str | None,
    dir_: str | None,
    home: Path | None,
    as_json: bool,
    **opts: Any,
) -> None:
    """Change a list's settings (LIST: id, id prefix or name). '' clears a setting."""
    payload: dict[str, Any] = {"list": list_ref, **_given(name=name), **_settings(opts, True)}
    if dir_ is not None:
        payload["dir"] = _abspath(dir_) if dir_ else None
    _emit(_request(home, "list.config", payload), as_json, "list_changed")


def _list_command(verb: str, help_text: str, force: bool = False) -> None:
    @list_group.command(verb, help=help_text)
    @click.argument("list_ref", metavar="LIST")
    @home_option
    @json_option
    def command(list_ref: str, home: Path | None, as_json: bool, **flags: bool) -> None:
        payload = {"list": list_ref, **{k: v for k, v in flags.items() if v}}
        _emit(_request(home, f"list.{verb}", payload), as_json, f"list_{verb}d")

    if force:
        click.option(
            "--force",
            is_flag=True,
            help="Even with tasks queued or running, or unmerged work (the event says so).",
        )(command)


_list_command(
    "archive", "Put a list away: it and its tasks leave `list ls`, `tasks` and the board."
)
_list_command("unarchive", "Bring an archived list back, with its tasks.")
_list_command(
    "delete",
    "Delete a list: it takes no more tasks and its name is free; every event stays. Refused "
    "while its tasks are under way or hold unmerged commits, unless --force.",
    force=True,
)


# --- tasks ---------------------------------------------------------------------------------


@app.group("task")
def task_group() -> None:
    """Tasks: add, show, edit, queue, unqueue, cancel, sub-tasks."""


_DESCRIPTION_HELP = (
    f"What the agent should know, at most {rq.MAX_TEXT:,} characters; @FILE reads it from a "
    "file, - from stdin."
)


def _description(value: str | None) -> str | None:
    """`-d TEXT`, `-d @FILE` or `-d -` (stdin), checked against the request's limit here, so
    a long file is refused in words rather than by the API's field path."""
    if value is None:
        return None
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@") and len(value) > 1:
        path = Path(value[1:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ClaudeDoError(f"{plain(str(path))} is not UTF-8 text", "invalid") from None
        except OSError as exc:
            raise ClaudeDoError(
                f"cannot read the description from {plain(str(path))}: {exc.strerror}", "invalid"
            ) from None
    if len(value) > rq.MAX_TEXT:
        raise ClaudeDoError(
            f"the description is {len(value):,} characters; at most {rq.MAX_TEXT:,} are taken",
            "invalid",
        )
    return value


@task_group.command("add")
@click.argument("list_ref", metavar="LIST")
@click.argument("title")
@click.option("-d", "--description", default="", metavar="TEXT|@FILE|-", help=_DESCRIPTION_HELP)
@click.option("--subtask", "subtasks", multiple=True, help="A checklist item (repeatable).")
@agent_options
@click.option("--queue", is_flag=True, help="Queue the task right away.")
@home_option
@json_option
@quiet_option
def task_add(
    list_ref: str,
    title: str,
    description: str,
    subtasks: tuple[str, ...],
    queue: bool,
    home: Path | None,
    as_json: bool,
    quiet: bool,
    **opts: Any,
) -> None:
    """Add a task to LIST (id, id prefix or name): a draft, or queued with --queue."""
    payload = {
        "list": list_ref,
        "title": title,
        "description": _description(description),
        "subtasks": list(subtasks),
        "queue": queue,
        **_settings(opts),
    }
    _emit_new(_request(home, "task.add", payload), as_json, quiet, "task_added")


@task_group.command("show")
@click.argument("task_id", metavar="ID")
@as_of_option
@home_option
@json_option
def task_show(task_id: str, as_of: Any, home: Path | None, as_json: bool) -> None:
    """A task with its sub-tasks, runs and worktree (ID: id or unique prefix)."""
    payload = _given(task=task_id, as_of=as_of)
    _emit(_request(home, "task.show", payload), as_json, "task_one")


@task_group.command("edit")
@click.argument("task_id", metavar="ID")
@click.option("--title", help="New title.")
@click.option("-d", "--description", metavar="TEXT|@FILE|-", help=_DESCRIPTION_HELP)
@agent_options
@home_option
@json_option
def task_edit(
    task_id: str,
    title: str | None,
    description: str | None,
    home: Path | None,
    as_json: bool,
    **opts: Any,
) -> None:
    """Change a task. '' clears an agent setting."""
    payload = {
        "task": task_id,
        **_given(title=title, description=_description(description)),
        **_settings(opts, clearable=True),
    }
    _emit(_request(home, "task.edit", payload), as_json, "task_edited")


def _many_command(verb: str, help_text: str, force_help: str | None = None) -> None:
    @task_group.command(verb, help=help_text)
    @click.argument("ids", nargs=-1, required=True, metavar="ID...")
    @home_option
    @json_option
    def command(ids: tuple[str, ...], home: Path | None, as_json: bool, **flags: bool) -> None:
        if verb == "queue" and not as_json:
            _say_before_queue(home, ids)
        payload = {"tasks": list(ids), **{k: v for k, v in flags.items() if v}}
        _emit(_request(home, f"task.{verb}", payload), as_json, f"tasks_{verb}")

    if force_help:
        click.option("--force", is_flag=True, help=force_help)(command)


def _say_before_queue(home: Path | None, ids: Iterable[str]) -> None:
    """A task whose worktree was discarded runs again in one made from the kept commits:
    say so before it happens (a refused id is left to the queue's own error)."""
    for ref in ids:
        try:
            task = _request(home, "task.show", {"task": ref})
        except ClaudeDoError:
            continue
        tree = task.get("worktree") or {}
        if tree.get("status") == "discarded":
            kept = plain(tree.get("kept_ref") or tree.get("head_commit") or "its base commit")
            sys.stderr.write(
                f"note: the worktree of task {task['id'][:8]} was discarded; queueing makes "
                f"it again from {kept}\n"
            )


_many_command(
    "queue", "Queue tasks for a free slot (drafts; done, failed or cancelled ones rerun)."
)
_many_command("unqueue", "Take queued tasks back to draft.")
_many_command("cancel", "Cancel tasks (a running one is stopped by its slot).")
_many_command(
    "archive",
    "Put tasks away (drafts and ended ones): they leave `tasks` and the board; nothing of "
    "them changes.",
)
_many_command("unarchive", "Bring archived tasks back.")
_many_command(
    "delete",
    "Delete tasks: they take no more commands and show only with --archived; their events, "
    "runs and git work stay. Refused while a task runs or holds unmerged commits, unless "
    "--force.",
    force_help="Even a task under way (it is cancelled) or holding unmerged commits (the "
    "event records what was overridden).",
)


_POLL_S = 0.2
_UNDER_WAY = ("queued", "claimed", "running")


@task_group.command("wait")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@home_option
@json_option
def task_wait(ids: tuple[str, ...], home: Path | None, as_json: bool) -> None:
    """Wait until the tasks are neither queued nor running, and say how each ended; exit 1
    if one failed (for scripts: `claudedo task wait $id && claudedo worktree merge $id`)."""
    ended = []
    for ref in ids:
        task = _request(home, "task.show", {"task": ref})
        while task["status"] in _UNDER_WAY or task.get("review"):
            time.sleep(_POLL_S)  # ok: polling the node for the task's end, as long as it takes
            task = _request(home, "task.show", {"task": ref})
        ended.append(task)
    if as_json:
        _emit(ended, True, "")
    else:
        from claudedo_actors.cli import render

        render.tasks_ended(ended)
    if any(t["status"] == "failed" for t in ended):
        raise click.exceptions.Exit(1)


@task_group.command("continue")
@click.argument("task_id", metavar="ID")
@click.argument("prompt")
@home_option
@json_option
def task_continue(task_id: str, prompt: str, home: Path | None, as_json: bool) -> None:
    """Resume the task's latest agent session with PROMPT, as its next run."""
    payload = {"task": task_id, "prompt": prompt}
    _emit(_request(home, "task.continue", payload), as_json, "task_continued")


@app.command()
@click.argument("task_id", metavar="ID")
@home_option
@json_option
def runs(task_id: str, home: Path | None, as_json: bool) -> None:
    """The runs of a task: session, exit code, cause, turns, tokens, cost, result, log."""
    _emit_pages(_parts(home, "runs", {"task": task_id}), as_json, "runs")


@app.command("log")
@click.argument("task_id", metavar="ID")
@click.option("--run", "run_number", type=click.IntRange(min=1), help="Run N (default: latest).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the run goes on.")
@click.option("--raw", is_flag=True, help="The stream-json lines as written (NDJSON): the "
              "default when stdout is not a terminal.")  # fmt: skip
@click.option("--readable", is_flag=True, help="What the agent said, its tool calls and their "
              "results: the default on a terminal.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The NDJSON lines, as --raw.")
@home_option
def log_command(
    task_id: str,
    run_number: int | None,
    follow: bool,
    raw: bool,
    readable: bool,
    as_json: bool,
    home: Path | None,
) -> None:
    """A run's transcript: from its file (a finished run's even with no node running), or
    live with --follow."""
    import asyncio

    from claudedo_actors.agent.follow import follow_output
    from claudedo_actors.cli.client import NodeClient
    from events.errors import Unavailable

    if readable and (raw or as_json):
        raise click.UsageError("--readable goes without --raw and --json")
    write = _transcript_writer(readable or (not (raw or as_json) and sys.stdout.isatty()))
    try:
        client = NodeClient(_home(home))
    except Unavailable:
        if follow:
            raise
        _print_file(_log_without_node(_home(home), task_id, run_number), write)
        return
    task = client.request("task.show", {"task": task_id})
    while follow and not task["runs"] and task["status"] in ("queued", "claimed", "running"):
        time.sleep(_POLL_S)  # ok: --follow of a queued task waits for its first run
        task = client.request("task.show", {"task": task_id})
    runs = task["runs"]
    if not runs:
        raise ClaudeDoError(f"task {task_id} has no run yet", code="not_found")
    chosen = [r for r in runs if run_number is None or r["run_number"] == run_number]
    if not chosen:
        raise ClaudeDoError(f"task {task_id} has no run {run_number}", code="not_found")
    run = chosen[-1]
    path = _log_file(task["id"], run)
    if not (follow and run["finished_at"] is None) and path is not None and path.is_file():
        _print_file(path, write)
        return

    ended = asyncio.run(
        follow_output(
            client.address.nats_url,
            task["id"],
            run["run_number"],
            write,
            idle_timeout_s=None if follow else 1.0,
            credential=client.credential,
        )
    )
    if not ended and run["finished_at"] is not None and not (path and path.is_file()):
        raise ClaudeDoError(
            f"the log of run {run['run_number']} is not on this machine "
            f"({run['log_path']}) and its live lines have aged out of the output stream",
            code="not_found",
        )


def _transcript_writer(readable: bool) -> Callable[[bytes], None]:
    """How one stream-json line is printed: as it is, or as the entries a reader wants
    (agent/transcript.py), every control character escaped."""
    out = sys.stdout.buffer
    if not readable:

        def write_raw(line: bytes) -> None:
            out.write(line + b"\n")
            out.flush()

        return write_raw
    from claudedo_actors.agent import transcript

    def write_readable(line: bytes) -> None:
        for entry in transcript.entries(line):
            text = "\n".join(plain(part) for part in transcript.plain(entry).split("\n"))
            out.write(text.encode() + b"\n")
        out.flush()

    return write_readable


def _print_file(path: Path, write: Callable[[bytes], None]) -> None:
    with path.open("rb") as f:
        for line in f:
            write(line.rstrip(b"\n"))


def _log_without_node(home: Path, ref: str, run_number: int | None) -> Path:
    """A run's file found by the names a node gives them (`<task id>_run<N>.ndjson` in the
    home's logs), for a finished run when no node runs: `ref` is an id or its prefix."""
    from claudedo_actors.node.home import Home

    ref = ref.strip().lower()
    logs = Home(home).logs_dir
    if not ref or any(c not in "0123456789abcdef-" for c in ref):
        raise ClaudeDoError(f"task {plain(ref)} not found", code="not_found")
    runs: dict[str, dict[int, Path]] = {}
    for path in logs.glob(f"{ref}*_run*.ndjson") if logs.is_dir() else ():
        task_id, _, number = path.name.removesuffix(".ndjson").rpartition("_run")
        if number.isascii() and number.isdigit():
            runs.setdefault(task_id, {})[int(number)] = path
    if not runs:
        raise ClaudeDoError(
            f"no node running for home {home} (start one with: claudedo up), and no log of a "
            f"task {plain(ref)} in {logs}",
            code="unavailable",
        )
    if len(runs) > 1:
        named = ", ".join(f"{t[:8]}…" for t in sorted(runs)[:5])
        raise ClaudeDoError(f"ambiguous id '{plain(ref)}': {named}", code="ambiguous")
    ((task_id, files),) = runs.items()
    chosen = max(files) if run_number is None else run_number
    if chosen not in files:
        raise ClaudeDoError(f"task {task_id} has no log of run {chosen}", code="not_found")
    return files[chosen]


def _log_file(task_id: str, run: dict[str, Any]) -> Path | None:
    """The run's NDJSON file as the projection records it, if it is named as a node names it
    (`<home>/logs/<task id>_run<N>.ndjson`): another path from the log is never read."""
    path = Path(run["log_path"] or "")
    if path.name != f"{task_id}_run{run['run_number']}.ndjson" or path.parent.name != "logs":
        return None
    return path


@app.command()
@click.option("--once", is_flag=True, help="Print the board once and exit.")
@click.option(
    "--interval", type=_FiniteFloat(0.05, 60), default=1.0, show_default=True,
    help="Seconds between refreshes.",
)  # fmt: skip
@home_option
@json_option
def watch(once: bool, interval: float, home: Path | None, as_json: bool) -> None:
    """A live board: running tasks by node and slot, what each said last, cost so far.

    Printed once when stdout is not a terminal (or with --once); live, it waits for a node
    that stopped and goes on when it is back."""
    from claudedo_actors.cli import render

    if once or as_json or not sys.stdout.isatty():
        _emit(_request(home, "board", {}), as_json, "board")
        return
    with render.live(render.board_table(_request(home, "board", {}))) as live:
        while True:
            time.sleep(interval)  # ok: the refresh period of a live display
            live.update(_board_now(home), refresh=True)


def _board_now(home: Path | None) -> Any:
    """The board's table, or what keeps it from being shown (a node stopped or restarting:
    the next refresh asks again, a new node's address included)."""
    from claudedo_actors.cli import render
    from events.errors import Unavailable

    try:
        return render.board_table(_request(home, "board", {}))
    except Unavailable as exc:
        return render.board_away(exc.message)


@app.group("worktree")
def worktree_group() -> None:
    """Review a task's work: diff, merge into the base branch, or discard it."""


@worktree_group.command("diff")
@click.argument("task_id", metavar="ID")
@click.option("--stat", is_flag=True, help="Only the summary of changed files.")
@home_option
@json_option
def worktree_diff(task_id: str, stat: bool, home: Path | None, as_json: bool) -> None:
    """What the task's branch changed since the commit it was made from."""
    result = _request(home, "worktree.diff", {"task": task_id, "stat": stat})
    if as_json:
        _emit(result, True, "")
        return
    sys.stdout.write(result["diff"])
    if not result["diff"]:
        base = plain(result.get("base_branch") or result["base_commit"][:10])
        sys.stderr.write(
            f"no changes: the branch {plain(result['branch'] or '')} of task "
            f"{result['task_id'][:8]} has no commits beyond {base}\n"
        )
    if result["uncommitted"]:
        sys.stderr.write(
            f"note: {len(result['uncommitted'])} uncommitted change(s) in the worktree "
            "are not in this diff\n"
        )


@worktree_group.command("merge")
@click.argument("task_id", metavar="ID")
@home_option
@json_option
def worktree_merge(task_id: str, home: Path | None, as_json: bool) -> None:
    """Merge the task's branch into the branch its worktree was made from."""
    _emit(_request(home, "worktree.merge", {"task": task_id}), as_json, "merged")


@worktree_group.command("discard")
@click.argument("task_id", metavar="ID")
@home_option
@json_option
def worktree_discard(task_id: str, home: Path | None, as_json: bool) -> None:
    """Remove the task's worktree and branch; its commits stay under refs/claudedo/."""
    if not as_json:
        task = _request(home, "task.show", {"task": task_id})
        tree = task.get("worktree") or {}
        if tree.get("status") == "merged":
            sys.stderr.write(
                f"note: the branch {plain(tree.get('branch') or '')} of task {task['id'][:8]} "
                f"was merged into {plain(tree.get('base_branch') or '')}; discarding removes "
                "the worktree and branch, the merge stays\n"
            )
    _emit(_request(home, "worktree.discard", {"task": task_id}), as_json, "discarded")


@worktree_group.command("prune")
@click.option("--yes", is_flag=True, help="Remove them (without it: only list them).")
@home_option
@json_option
def worktree_prune(yes: bool, home: Path | None, as_json: bool) -> None:
    """Remove the worktrees and branches of tasks whose work is merged, or that hold none.

    A dry run lists them; --yes removes them, each as a discard (its commits kept under
    refs/claudedo/kept/). A branch with a commit its base lacks, a worktree with uncommitted
    changes and a task under way are never touched."""
    result = _request(home, "worktree.prune", {"apply": yes})
    _emit(result, as_json, "pruned")


@task_group.group("subtask")
def subtask_group() -> None:
    """A task's checklist."""


@subtask_group.command("add")
@click.argument("task_id", metavar="ID")
@click.argument("titles", nargs=-1, required=True, metavar="TITLE...")
@home_option
@json_option
def subtask_add(task_id: str, titles: tuple[str, ...], home: Path | None, as_json: bool) -> None:
    """Append checklist items to a task."""
    payload = {"task": task_id, "titles": list(titles)}
    _emit(_request(home, "task.subtask.add", payload), as_json, "subtasks_added")


def _mark_command(verb: str, help_text: str) -> None:
    @subtask_group.command(verb, help=help_text)
    @click.argument("task_id", metavar="ID")
    @click.argument("subtasks", nargs=-1, required=True, metavar="N...")
    @home_option
    @json_option
    def command(task_id: str, subtasks: tuple[str, ...], home: Path | None, as_json: bool) -> None:
        payload = {"task": task_id, "subtasks": list(subtasks)}
        task = _request(home, f"task.subtask.{verb}", payload)
        if as_json:
            _emit(task, True, "")
            return
        from claudedo_actors.cli import render

        render.subtasks_marked(task, subtasks, verb)


_mark_command("done", "Tick checklist items (N: 1-based number or sub-task id prefix).")
_mark_command("undo", "Untick checklist items (N: 1-based number or sub-task id prefix).")


@app.command()
@click.option("--list", "list_ref", help="Only this list (id, id prefix or name).")
@click.option("--status", help="Only this status (draft, queued, claimed, running, done, ...).")
@click.option("--limit", type=_int_range(rq.Limit), help="At most this many.")
@click.option("--offset", type=_int_range(rq.Offset), default=0, help="Skip this many first.")
@as_of_option
@archived_option
@home_option
@json_option
def tasks(
    list_ref: str | None,
    status: str | None,
    limit: int | None,
    offset: int,
    as_of: Any,
    archived: bool,
    home: Path | None,
    as_json: bool,
) -> None:
    """Tasks, oldest first: every one that matches (no limit unless --limit), but archived
    and deleted ones (and those of such lists) unless --archived.

    Printed as they come, a page at a time, however many there are."""
    payload = _given(
        list=list_ref, status=status, limit=limit, offset=offset or None, as_of=as_of,
        archived=archived or None,
    )  # fmt: skip
    _emit_pages(_parts(home, "tasks", payload), as_json, "tasks")


class _AuditGroup(click.Group):
    """`audit ID` is `audit show ID`: a first word that is no sub-command is a task."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@app.group("audit", cls=_AuditGroup)
def audit_group() -> None:
    """What happened to a task (`audit ID`), and proof the log is what was written."""


@audit_group.command("show")
@click.argument("task_id", metavar="ID")
@home_option
@json_option
def audit(task_id: str, home: Path | None, as_json: bool) -> None:
    """Every event of a task in order: sequence, time, type, node, actor, key fields."""
    _emit_pages(_parts(home, "audit", {"task": task_id}), as_json, "audit")


@audit_group.command("verify")
@click.argument("ref", metavar="[ID]", required=False)
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Verify this export offline, with no node and no NATS.")  # fmt: skip
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Trust only the public keys (*.pub) in this folder.")  # fmt: skip
@click.option("--trust-export-keys", is_flag=True,
              help="With --export, no --keys: check against the keys it carries.")  # fmt: skip
@click.option("--max-unvouched", type=_int_range(rq.Offset), default=None, metavar="N",
              help="Events after the last checkpoint that are fine (2000).")  # fmt: skip
@click.option("--no-output", is_flag=True, help="Do not read the live output stream.")
@home_option
@json_option
def audit_verify(
    ref: str | None,
    export_dir: Path | None,
    keys_dir: Path | None,
    trust_export_keys: bool,
    max_unvouched: int | None,
    no_output: bool,
    home: Path | None,
    as_json: bool,
) -> None:
    """Check the log's hash chains, sequence, signed checkpoints, every run's transcript and
    every recorded commit: one line per discrepancy, and a non-zero exit if there is any.

    With ID, only that task's (or list's) chain, transcripts and commits are reported."""
    from claudedo_actors.audit.commands import verify_export, verify_live

    if export_dir is not None:
        report = verify_export(
            export_dir.absolute(), ref, keys_dir, trust_export_keys, max_unvouched
        )
    else:
        if trust_export_keys:
            raise click.UsageError("--trust-export-keys goes with --export")
        from claudedo_actors.cli.client import NodeClient

        client = NodeClient(_home(home))
        only = None if ref is None else _aggregate_of(client, ref)
        url, cred = client.address.nats_url, client.credential
        report = verify_live(client.home, url, cred, only, keys_dir, not no_output, max_unvouched)
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        from claudedo_actors.audit.commands import summary

        for item in report.discrepancies:
            sys.stdout.write(plain(item.line()) + "\n")
        for note in report.notes:
            sys.stderr.write(f"note: {plain(note)}\n")
        sys.stdout.write(summary(report) + "\n")
    if not report.ok:
        raise click.exceptions.Exit(1)


@audit_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-git", is_flag=True, help="Leave out the bundles of recorded commits.")
@home_option
@json_option
def audit_export(directory: Path, no_git: bool, home: Path | None, as_json: bool) -> None:
    """Write the log, transcripts, trusted public keys and recorded commits into DIRECTORY
    (new or empty), for `audit verify --export DIRECTORY` anywhere."""
    from claudedo_actors.audit.commands import export_live
    from claudedo_actors.cli.client import NodeClient

    client = NodeClient(_home(home))
    url, cred = client.address.nats_url, client.credential
    summary = export_live(client.home, url, cred, directory.absolute(), with_git=not no_git)
    if as_json:
        sys.stdout.write(json.dumps(summary.as_json()) + "\n")
    else:
        sys.stdout.write(
            f"exported {summary.messages} messages, {summary.transcripts} transcripts, "
            f"{summary.keys} keys and {summary.bundles} git bundle(s) to {directory}\n"
        )


def _aggregate_of(client: NodeClient, ref: str) -> str:
    """The id of the task, else the list, that `ref` names (an id, a prefix, a list name)."""
    from events.errors import NotFound

    try:
        return str(client.request("task.show", {"task": ref})["id"])
    except NotFound:
        lists = client.request("list.ls", {})
        found = [r["id"] for r in lists if r["id"].startswith(ref) or r["name"] == ref]
        if len(found) != 1:
            raise
        return str(found[0])


def _home(home: Path | None) -> Path:
    from claudedo_actors.node.home import resolve_home

    return resolve_home(home)


@app.command()
@click.argument("query")
@click.option("--timeout", type=_FiniteFloat.of(rq.SqlTimeout), default=30.0, show_default=True,
              help="Stop the query after this many seconds.")  # fmt: skip
@click.option("--max-rows", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Rows the table shows (0: all); --json prints every row.")  # fmt: skip
@as_of_option
@home_option
@json_option
def sql(
    query: str, timeout: float, max_rows: int, as_of: Any, home: Path | None, as_json: bool
) -> None:
    """Run one read-only SQL query on the projection.

    Tables: lists, tasks, subtasks, runs, worktrees, events, skipped_messages. Views: run_facts,
    run_stats_by_model, run_stats_by_list, run_stats_by_day (run_stats_by_day_since('2026-03-01')
    and the like: from a time on), failure_causes.
    """
    parts = _parts(home, "sql", _given(query=query, timeout_s=timeout, as_of=as_of))
    if as_json:

        def rows() -> Iterator[dict[str, Any]]:
            for part in parts:
                names = _unique(part["columns"])
                for row in part["rows"]:
                    yield dict(zip(names, row, strict=True))

        _write_json_array(rows())
    else:
        from claudedo_actors.cli import render

        render.sql_pages(parts, max_rows or None)


def _unique(names: list[str]) -> list[str]:
    """Column names as JSON keys: a repeated name gets a suffix (a, a_2) instead of vanishing."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


@app.group("projections")
def projections_group() -> None:
    """The DuckDB projections derived from the log."""


@projections_group.command("rebuild")
@home_option
@json_option
def projections_rebuild(home: Path | None, as_json: bool) -> None:
    """Replay the whole log into a fresh projection and swap it in."""
    _emit(_request(home, "projections.rebuild", {}), as_json, "rebuild")


# --- analytics -----------------------------------------------------------------------------


class _IsoTime(_ParamBase):
    """An ISO 8601 date or time (`2026-03-01`, `2026-03-01T09:30:00+02:00`, `...Z`), as the
    UTC time the API takes; a time without an offset is UTC."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import UTC, datetime

        if isinstance(value, datetime):
            return value
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 time (e.g. 2026-03-01 or 2026-03-01T09:30:00Z)",
                param,
                ctx,
            )
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@app.command()
@click.option(
    "--since",
    type=_IsoTime(),
    metavar="TIME",
    help="Only runs started at or after TIME (ISO 8601; UTC without an offset).",
)
@click.option(
    "--by",
    type=click.Choice(["model", "list", "day"]),
    default="model",
    show_default=True,
    help="One row per model, list or UTC day.",
)
@home_option
@json_option
def stats(since: Any, by: str, home: Path | None, as_json: bool) -> None:
    """Figures of the runs: success rate, retries, failure causes, tokens, cost, cost per
    done task, run time and queue wait (p50/p95). The views run_stats_by_* hold the same."""
    payload = {"by": by, **_given(since=since and since.isoformat())}
    rows = _request(home, "stats", payload)
    if as_json:
        _emit(rows, True, "")
        return
    from claudedo_actors.cli import render

    render.stats(rows, by)


@app.command()
@click.option(
    "--parquet",
    "parquet_dir",
    required=True,
    metavar="DIR",
    help="New or empty folder to write <table>.parquet files into (made if missing).",
)
@home_option
@json_option
def export(parquet_dir: str, home: Path | None, as_json: bool) -> None:
    """Write the projection's tables and the flat event table as Parquet files, one per table,
    from one state of the projection, for DuckDB, pandas or Polars.

    DIR must be new or empty. The node writes the files, on its machine."""
    from claudedo_actors.cli.client import NodeClient
    from claudedo_actors.node.home import resolve_home

    if "\0" in parquet_dir or not parquet_dir.strip():
        raise click.BadParameter("give a folder path", param_hint="'--parquet'")
    # A large projection takes a while: wait longer than for a query.
    client = NodeClient(resolve_home(home), timeout_s=_EXPORT_TIMEOUT_S)
    _emit(client.request("export", {"dir": _abspath(parquet_dir)}), as_json, "export")


_EXPORT_TIMEOUT_S = 600.0


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: every error is one line on stderr and a non-zero exit."""
    try:
        # Out of standalone mode click returns the code of a `click.exceptions.Exit`.
        code = app.main(args=argv, prog_name="claudedo", standalone_mode=False)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code if isinstance(code, int) else 0
    except (BrokenPipeError, _StdoutClosed):
        return _stdout_closed()
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("error: aborted\n")
        return 130
    except click.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # type: ignore[attr-defined]
            sys.stdout.write(exc.ctx.get_help() + "\n")  # type: ignore[attr-defined]
            return 0
        sys.stderr.write(f"error: {plain(' '.join(exc.format_message().split()))}\n")
        return exc.exit_code or 2
    except ClaudeDoError as exc:
        sys.stderr.write(f"error: {plain(' '.join(exc.message.split()))}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        if os.environ.get("CLAUDEDO_DEBUG"):
            raise
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {plain(' '.join(str(exc).split()))}\n"
        )
        return 1


def _stdout_closed() -> int:
    """Whoever read stdout went away (`claudedo tasks | head -1`): stop quietly, as Unix tools
    do. What is still buffered goes to /dev/null, so the interpreter's last flush at exit does
    not print `Exception ignored ... BrokenPipeError` either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE: what a shell reports for a tool a closed pipe stopped


if __name__ == "__main__":
    sys.exit(main())
