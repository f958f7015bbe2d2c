"""What a run executes: resolved agent settings and Claude Code's argv."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

import events as ev
from events.errors import ClaudeDoError
from projections import ListState, TaskState

DEFAULT_MODEL = "claude-sonnet-4-6"
# Headless runs cannot ask for permission. This default lets the agent edit files and run
# shell commands unattended, and works as root (measured with 2.1.197; docs/architecture.md).
DEFAULT_PERMISSION_MODE = "acceptEdits"
DEFAULT_ALLOWED_TOOLS: tuple[str, ...] = ("Bash",)
BIN_ENV = "CLAUDEDO_CLAUDE_BIN"


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The agent settings of one run: the task's value, else the list's, else the default."""

    model: str = DEFAULT_MODEL
    system_prompt: str | None = None
    agent_path: str | None = None
    permission_mode: str = DEFAULT_PERMISSION_MODE
    allowed_tools: tuple[str, ...] = DEFAULT_ALLOWED_TOOLS
    max_budget_usd: float | None = None
    max_turns: int | None = None
    timeout_s: float | None = None


def resolve_config(task: TaskState, lst: ListState | None) -> AgentConfig:
    chosen: dict[str, Any] = {}
    for name in ev.AGENT_SETTINGS:
        value = getattr(task, name)
        if value is None and lst is not None:
            value = getattr(lst, name)
        if value is not None:
            chosen[name] = value
    return AgentConfig(**chosen)


def resolve_binary(configured: str | None) -> str:
    """The agent binary: `--claude-bin`, else CLAUDEDO_CLAUDE_BIN, else `claude` on PATH."""
    name = configured or os.environ.get(BIN_ENV) or "claude"
    setting = "--claude-bin" if configured else BIN_ENV if os.environ.get(BIN_ENV) else None
    found = shutil.which(name)
    if found is None:
        how = f"set by {setting}" if setting else f"on PATH; set {BIN_ENV} or --claude-bin"
        raise ClaudeDoError(f"Claude Code binary {name!r} not found ({how})", code="spawn_failed")
    return found


def check_permission_mode(mode: str, env: Mapping[str, str], euid: int) -> None:
    """Claude Code refuses bypassPermissions as root unless IS_SANDBOX=1: say so up front."""
    if mode == "bypassPermissions" and euid == 0 and env.get("IS_SANDBOX") != "1":
        raise ClaudeDoError(
            "permission mode bypassPermissions needs IS_SANDBOX=1 in the node's environment "
            "when running as root (Claude Code refuses it otherwise)",
            code="spawn_failed",
        )


def agent_definition(path: str) -> tuple[str, dict[str, Any]]:
    """An agent file (Markdown with front matter, as Claude Code's agents) as `--agents` JSON."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ClaudeDoError(
            f"cannot read agent file {path}: {exc.strerror}", "spawn_failed"
        ) from None
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---"):
        head, sep, rest = text[3:].partition("\n---")
        if sep:
            body = rest.split("\n", 1)[1] if "\n" in rest else ""
            for line in head.splitlines():
                key, colon, value = line.partition(":")
                if colon and key.strip():
                    meta[key.strip()] = value.strip().strip("\"'")
    name = meta.get("name") or Path(path).stem
    definition: dict[str, Any] = {
        "description": meta.get("description") or name,
        "prompt": body.strip(),
    }
    if meta.get("tools"):
        definition["tools"] = [t.strip() for t in meta["tools"].split(",") if t.strip()]
    if meta.get("model"):
        definition["model"] = meta["model"]
    return name, definition


def build_argv(binary: str, config: AgentConfig, resume_session_id: str | None) -> list[str]:
    """Claude Code's command line for a headless stream-json run (the prompt goes on stdin)."""
    argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
    argv += ["--model", config.model]
    if config.system_prompt:
        argv += ["--append-system-prompt", config.system_prompt]
    if config.agent_path:
        name, definition = agent_definition(config.agent_path)
        argv += ["--agents", json.dumps({name: definition}), "--agent", name]
    argv += ["--permission-mode", config.permission_mode]
    if config.allowed_tools:
        argv += ["--allowedTools", ",".join(config.allowed_tools)]
    if config.max_turns is not None:
        argv += ["--max-turns", str(config.max_turns)]
    if config.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{config.max_budget_usd:g}"]
    if resume_session_id:
        argv += ["--resume", resume_session_id]
    return argv
