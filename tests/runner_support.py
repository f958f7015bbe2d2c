"""Helpers for tests that run tasks: a node with slots and the fake agent, and what to ask it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psutil

from claudedo_actors.agent.process import RUN_MARK
from claudedo_actors.cli.client import NodeClient
from events.credentials import Credential
from tests.conftest import NodeProcess, wait_until

FAKE = Path(__file__).resolve().parent / "fake_claude" / "claude"
TERMINAL = ("done", "failed", "cancelled")


class Runner:
    """A node that runs tasks with the fake agent, and a client to talk to it."""

    def __init__(
        self,
        tmp_path: Path,
        slots: int = 2,
        claude_bin: str | None = None,
        env: dict[str, str] | None = None,
        name: str = "home",
        extra: list[str] | None = None,
        creds: Path | None = None,
    ) -> None:
        """`creds`: a folder of role credentials (node, operator) for a given NATS server with
        roles, put into the home before the node starts (the node and the CLI log in with
        them, as a home of a shared server is set up)."""
        self.creds = creds
        self.calls = tmp_path / f"{name}-agent-calls.jsonl"
        self.node = NodeProcess(
            tmp_path / name,
            ["--slots", str(slots), "--claude-bin", claude_bin or str(FAKE), *(extra or [])],
            env={"FAKE_CLAUDE_LOG": str(self.calls), **(env or {})},
        )

    def start(self) -> Runner:
        if self.creds is not None:
            target = self.node.home / "creds"
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path in self.creds.glob("*.json"):
                Credential.read(path).write(target / path.name)
        self.node.start()
        return self

    @property
    def client(self) -> NodeClient:
        return NodeClient(self.node.home)

    def ask(self, verb: str, **payload: Any) -> Any:
        return self.client.request(verb, payload)

    def add_list(self, repo: Path | None, name: str = "demo", **settings: Any) -> str:
        payload: dict[str, Any] = {"name": name, **settings}
        if repo is not None:
            payload["dir"] = str(repo)
        return str(self.ask("list.add", **payload)["id"])

    def add_task(self, title: str, list_ref: str = "demo", **fields: Any) -> str:
        fields.setdefault("queue", True)
        return str(self.ask("task.add", list=list_ref, title=title, **fields)["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ask("task.show", task=task_id)
        return result

    def wait_status(
        self, task_id: str, statuses: tuple[str, ...] = TERMINAL, timeout_s: float = 60
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["status"] in statuses else None

        found: dict[str, Any] = wait_until(reached, timeout_s, f"task {task_id[:8]} {statuses}")
        return found

    def wait_run(self, task_id: str, run_number: int = 1, timeout_s: float = 30) -> dict[str, Any]:
        """Wait until run N has its session (the agent process is up and talking)."""

        def started() -> dict[str, Any] | None:
            runs = self.task(task_id)["runs"]
            run = runs[run_number - 1] if len(runs) >= run_number else None
            return run if run is not None and run["session_id"] else None

        found: dict[str, Any] = wait_until(started, timeout_s, f"run {run_number} session")
        return found

    def events(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.ask("audit", task=task_id)]

    def agent_calls(self) -> list[dict[str, Any]]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]

    def stop(self) -> None:
        if self.node.proc is not None and self.node.proc.poll() is None:
            self.node.stop()


def processes_marked(task_id: str) -> list[int]:
    """Live processes of any run of the task (they carry the run mark in their environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            mark = proc.environ().get(RUN_MARK, "")
            if mark.startswith(task_id) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def git_out(repo: Path | str, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout.strip()  # fmt: skip
