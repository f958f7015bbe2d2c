"""The `claudedo` command line: one node command, the rest are requests to the node."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from events.errors import ClaudeDoError

app = typer.Typer(
    name="claudedo",
    help="A to-do board whose tasks are done by the Claude Code CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
list_app = typer.Typer(help="Lists: boards that point at a git repository.", no_args_is_help=True)
task_app = typer.Typer(help="Tasks: add, show, edit, queue, cancel.", no_args_is_help=True)
subtask_app = typer.Typer(help="Sub-tasks: a task's checklist.", no_args_is_help=True)
projections_app = typer.Typer(help="The DuckDB projections.", no_args_is_help=True)
app.add_typer(list_app, name="list")
app.add_typer(task_app, name="task")
task_app.add_typer(subtask_app, name="subtask")
app.add_typer(projections_app, name="projections")

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="CLAUDEDO_HOME",
        help="The node's home folder (default: a per-user data folder).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Claude model for the agent.")]
PromptOpt = Annotated[
    str | None, typer.Option("--system-prompt", help="Appended to the agent's system prompt.")
]
AgentOpt = Annotated[
    str | None, typer.Option("--agent", help="Agent definition file (Markdown, front matter).")
]
PermOpt = Annotated[
    str | None,
    typer.Option("--permission-mode", help="Claude Code permission mode for the agent."),
]
ToolsOpt = Annotated[
    list[str] | None,
    typer.Option("--allowed-tool", help="A tool the agent may use unasked (repeatable)."),
]
BudgetOpt = Annotated[
    float | None, typer.Option("--max-budget-usd", help="Cost limit of a run in USD.")
]
TurnsOpt = Annotated[int | None, typer.Option("--max-turns", help="Turn limit of a run.")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Wall-clock limit of a run in seconds.")
]


def _client(home: Path | None) -> Any:
    from claudedo_actors.client import NodeClient
    from claudedo_actors.home import resolve_home

    return NodeClient(resolve_home(home))


def _call(home: Path | None, verb: str, **payload: Any) -> Any:
    """A request with the options that were given (None: not given)."""
    return _client(home).request(verb, {k: v for k, v in payload.items() if v is not None})


def _abspath(path: str | None) -> str | None:
    if path is None:
        return None
    return os.path.abspath(os.path.expanduser(path))


def _settings(
    model: str | None,
    system_prompt: str | None,
    agent: str | None,
    permission_mode: str | None,
    allowed_tools: list[str] | None,
    max_budget_usd: float | None,
    max_turns: int | None,
    timeout: float | None,
    clearable: bool = False,
) -> dict[str, Any]:
    """Agent settings for a request. For changes, an empty string clears a setting."""
    values: dict[str, Any] = {
        "model": model,
        "system_prompt": system_prompt,
        "agent_path": agent if agent == "" else _abspath(agent),
        "permission_mode": permission_mode,
        "allowed_tools": allowed_tools or None,
        "max_budget_usd": max_budget_usd,
        "max_turns": max_turns,
        "timeout_s": timeout,
    }
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        # In a change, '' clears the setting: sent as JSON null.
        out[key] = None if clearable and value == "" else value
    return out


def _emit(data: Any, as_json: bool, human: Any) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        human(data)


# --- the node ------------------------------------------------------------------------------


@app.command()
def up(
    home: HomeOpt = None,
    nats: Annotated[
        str | None,
        typer.Option(
            "--nats",
            envvar="CLAUDEDO_NATS_URL",
            help="Use this NATS server instead of starting an embedded one.",
        ),
    ] = None,
    slots: Annotated[int, typer.Option("--slots", help="Tasks run at once on this node.")] = 2,
) -> None:
    """Start a node: embedded NATS (unless --nats), projector and API. Stops on Ctrl-C."""
    import logging

    from claudedo_actors.home import resolve_home
    from claudedo_actors.node import Node

    logging.basicConfig(
        level=os.environ.get("CLAUDEDO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("pykka").setLevel(logging.WARNING)
    raise typer.Exit(Node(resolve_home(home), nats, slots).run())


@app.command()
def info(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The node: id, NATS URL, stream, last sequence, projection checkpoint, slots."""
    from claudedo_actors import render

    _emit(_call(home, "info"), as_json, render.info)


# --- lists ---------------------------------------------------------------------------------


@list_app.command("add")
def list_add(
    name: str,
    dir: Annotated[
        str | None, typer.Option("--dir", help="Git work tree the tasks run in.")
    ] = None,
    model: ModelOpt = None,
    system_prompt: PromptOpt = None,
    agent: AgentOpt = None,
    permission_mode: PermOpt = None,
    allowed_tool: ToolsOpt = None,
    max_budget_usd: BudgetOpt = None,
    max_turns: TurnsOpt = None,
    timeout: TimeoutOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a list, optionally on a git repository (--dir)."""
    from claudedo_actors import render

    settings = _settings(
        model, system_prompt, agent, permission_mode, allowed_tool, max_budget_usd, max_turns,
        timeout,
    )  # fmt: skip
    result = _call(home, "list.add", name=name, dir=_abspath(dir), **settings)
    _emit(result, as_json, render.list_one)


@list_app.command("ls")
def list_ls(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Every list."""
    from claudedo_actors import render

    _emit(_call(home, "list.ls"), as_json, render.lists)


@list_app.command("config")
def list_config(
    list_ref: Annotated[str, typer.Argument(metavar="LIST", help="List id, id prefix or name.")],
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    dir: Annotated[
        str | None, typer.Option("--dir", help="New git work tree ('' for none).")
    ] = None,
    model: ModelOpt = None,
    system_prompt: PromptOpt = None,
    agent: AgentOpt = None,
    permission_mode: PermOpt = None,
    allowed_tool: ToolsOpt = None,
    max_budget_usd: BudgetOpt = None,
    max_turns: TurnsOpt = None,
    timeout: TimeoutOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a list's settings. An empty value ('') clears a setting."""
    from claudedo_actors import render

    payload = _settings(
        model, system_prompt, agent, permission_mode, allowed_tool, max_budget_usd, max_turns,
        timeout, clearable=True,
    )  # fmt: skip
    if name is not None:
        payload["name"] = name
    if dir is not None:
        payload["dir"] = None if dir == "" else _abspath(dir)
    result = _client(home).request("list.config", {"list": list_ref, **payload})
    _emit(result, as_json, render.list_one)


# --- tasks ---------------------------------------------------------------------------------


@task_app.command("add")
def task_add(
    list_ref: Annotated[str, typer.Argument(metavar="LIST", help="List id, id prefix or name.")],
    title: str,
    description: Annotated[
        str, typer.Option("--description", "-d", help="What the agent should know.")
    ] = "",
    subtask: Annotated[
        list[str] | None, typer.Option("--subtask", help="A checklist item (repeatable).")
    ] = None,
    model: ModelOpt = None,
    system_prompt: PromptOpt = None,
    agent: AgentOpt = None,
    permission_mode: PermOpt = None,
    allowed_tool: ToolsOpt = None,
    max_budget_usd: BudgetOpt = None,
    max_turns: TurnsOpt = None,
    timeout: TimeoutOpt = None,
    queue: Annotated[bool, typer.Option("--queue", help="Queue it right away.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a task to a list (a draft, or queued with --queue)."""
    from claudedo_actors import render

    settings = _settings(
        model, system_prompt, agent, permission_mode, allowed_tool, max_budget_usd, max_turns,
        timeout,
    )  # fmt: skip
    result = _call(
        home,
        "task.add",
        list=list_ref,
        title=title,
        description=description,
        subtasks=subtask or [],
        queue=queue,
        **settings,
    )
    _emit(result, as_json, render.task_one)


@task_app.command("show")
def task_show(task_id: Annotated[str, typer.Argument(metavar="ID")], home: HomeOpt = None,
              as_json: JsonOpt = False) -> None:  # fmt: skip
    """A task with its sub-tasks, runs and worktree."""
    from claudedo_actors import render

    _emit(_call(home, "task.show", task=task_id), as_json, render.task_one)


@task_app.command("edit")
def task_edit(
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    title: Annotated[str | None, typer.Option("--title", help="New title.")] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="New description.")
    ] = None,
    model: ModelOpt = None,
    system_prompt: PromptOpt = None,
    agent: AgentOpt = None,
    permission_mode: PermOpt = None,
    allowed_tool: ToolsOpt = None,
    max_budget_usd: BudgetOpt = None,
    max_turns: TurnsOpt = None,
    timeout: TimeoutOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a task. An empty value ('') clears an agent setting."""
    from claudedo_actors import render

    payload = _settings(
        model, system_prompt, agent, permission_mode, allowed_tool, max_budget_usd, max_turns,
        timeout, clearable=True,
    )  # fmt: skip
    if title is not None:
        payload["title"] = title
    if description is not None:
        payload["description"] = description
    result = _client(home).request("task.edit", {"task": task_id, **payload})
    _emit(result, as_json, render.task_one)


def _many(verb: str, ids: list[str], home: Path | None, as_json: bool) -> None:
    from claudedo_actors import render

    _emit(_call(home, verb, tasks=ids), as_json, render.tasks)


IdsArg = Annotated[list[str], typer.Argument(metavar="ID...", help="Task ids or id prefixes.")]


@task_app.command("queue")
def task_queue(ids: IdsArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Queue tasks for a free slot (drafts, or done/failed/cancelled tasks to run again)."""
    _many("task.queue", ids, home, as_json)


@task_app.command("unqueue")
def task_unqueue(ids: IdsArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Take queued tasks back to draft."""
    _many("task.unqueue", ids, home, as_json)


@task_app.command("cancel")
def task_cancel(ids: IdsArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel tasks (a running one is stopped by its slot)."""
    _many("task.cancel", ids, home, as_json)


@subtask_app.command("add")
def subtask_add(
    task_id: Annotated[str, typer.Argument(metavar="ID")],
    titles: Annotated[list[str], typer.Argument(metavar="TITLE...")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Append checklist items to a task."""
    from claudedo_actors import render

    _emit(_call(home, "task.subtask.add", task=task_id, titles=titles), as_json, render.task_one)


SubRefs = Annotated[list[str], typer.Argument(metavar="N...", help="Numbers (1-based) or ids.")]


@subtask_app.command("done")
def subtask_done(task_id: Annotated[str, typer.Argument(metavar="ID")], subtasks: SubRefs,
                 home: HomeOpt = None, as_json: JsonOpt = False) -> None:  # fmt: skip
    """Tick checklist items."""
    from claudedo_actors import render

    result = _call(home, "task.subtask.done", task=task_id, subtasks=subtasks)
    _emit(result, as_json, render.task_one)


@subtask_app.command("undo")
def subtask_undo(task_id: Annotated[str, typer.Argument(metavar="ID")], subtasks: SubRefs,
                 home: HomeOpt = None, as_json: JsonOpt = False) -> None:  # fmt: skip
    """Untick checklist items."""
    from claudedo_actors import render

    result = _call(home, "task.subtask.undo", task=task_id, subtasks=subtasks)
    _emit(result, as_json, render.task_one)


@app.command()
def tasks(
    list_ref: Annotated[
        str | None, typer.Option("--list", help="Only this list (id, prefix or name).")
    ] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tasks, oldest first: all that match (no limit unless --limit)."""
    from claudedo_actors import render

    _emit(_call(home, "tasks", list=list_ref, status=status, limit=limit), as_json, render.tasks)


@app.command()
def audit(task_id: Annotated[str, typer.Argument(metavar="ID")], home: HomeOpt = None,
          as_json: JsonOpt = False) -> None:  # fmt: skip
    """Every event of a task in order: sequence, time, type, node, actor, key fields."""
    from claudedo_actors import render

    _emit(_call(home, "audit", task=task_id), as_json, render.audit)


@app.command()
def sql(query: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Run one read-only SQL query on the projection (tables: lists, tasks, subtasks, runs,
    worktrees, events)."""
    from claudedo_actors import render

    result = _call(home, "sql", query=query)
    if as_json:
        rows = [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]
        _emit(rows, True, None)
    else:
        render.sql(result)


@projections_app.command("rebuild")
def projections_rebuild(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Replay the whole log into a fresh projection and swap it in."""
    from claudedo_actors import render

    _emit(_call(home, "projections.rebuild"), as_json, render.rebuild)


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: errors become one line on stderr and a non-zero exit."""
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("error: aborted\n")
        return 130
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]  # prints the help of the group
            return 0
        message = getattr(exc, "format_message", lambda: str(exc))()
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        return int(getattr(exc, "exit_code", 2) or 2)
    except ClaudeDoError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - a traceback never reaches the user
        if os.environ.get("CLAUDEDO_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
