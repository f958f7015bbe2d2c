"""Shared fixtures: a real nats-server per session, real git repos, real node processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from claudedo_actors.node.embedded_nats import EmbeddedNats


def wait_until(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)  # ok: the polling interval of a wait with a deadline


@pytest.fixture(scope="session", autouse=True)
def fake_claude_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fake agent keeps its sessions here (and never in the real home), like ~/.claude."""
    home = tmp_path_factory.mktemp("fake-claude")
    previous = os.environ.get("FAKE_CLAUDE_HOME")
    os.environ["FAKE_CLAUDE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("FAKE_CLAUDE_HOME", None)
    else:
        os.environ["FAKE_CLAUDE_HOME"] = previous


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream on a free loopback port, its store in a temp dir."""
    store = tmp_path_factory.mktemp("nats")
    server = EmbeddedNats(store, store / "nats-server.pid", "claudedo-tests")
    yield server.start()
    server.stop()


class JetStreamEnv:
    """A connection and a fresh event stream for one test, on its own event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.nc: Any = None
        self.js: Any = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def open(self) -> None:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self._drop_stream()

    async def _drop_stream(self) -> None:
        """Delete the event stream, and make sure it is gone: a delete that timed out on a
        busy machine left the last test's events for the next one."""
        from nats.js.errors import NotFoundError

        from events.log import STREAM

        for _ in range(50):
            with contextlib.suppress(Exception):
                await self.js.delete_stream(STREAM)
            try:
                await self.js.stream_info(STREAM)
            except NotFoundError:
                return
            except Exception:
                pass  # the server did not answer in time: ask again
        raise AssertionError(f"stream {STREAM} could not be deleted")

    async def close(self) -> None:
        await self._drop_stream()
        await self.nc.close()


@pytest.fixture(scope="module")
def jsenv_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server of the module's tests that drive the log directly: a node of another
    test, still finishing an append on the shared server, can never add to their stream."""
    store = tmp_path_factory.mktemp("nats-js")
    server = EmbeddedNats(store, store / "nats-server.pid", "claudedo-tests-js")
    yield server.start()
    server.stop()


@pytest.fixture
def jsenv(jsenv_url: str) -> Iterator[JetStreamEnv]:
    env = JetStreamEnv(jsenv_url)
    env.run(env.open())
    yield env
    env.run(env.close())
    env.loop.close()


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        },
    ).stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git work tree with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)


class NodeProcess:
    """`claudedo up` as a real child process on a home folder."""

    def __init__(
        self, home: Path, extra: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.home = home
        self.extra_env = env or {}
        # Nodes run no tasks unless a test gives them slots (and an agent to run).
        self.extra = extra or []
        if "--slots" not in self.extra:
            self.extra = [*self.extra, "--slots", "0"]
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = home.parent / f"{home.name}-node.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDEDO_")}
        env["CLAUDEDO_HOME"] = str(self.home)
        # The node signs the log a minute after new events: in a test about something else,
        # that checkpoint would land at a moment of its own (tests/test_audit.py sets it).
        env["CLAUDEDO_CHECKPOINT_INTERVAL_S"] = "3600"
        env.update(self.extra_env)
        return env

    def start(self) -> NodeProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "node.json").unlink(missing_ok=True)
        out = open(self.log_path, "a")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "claudedo_actors", "up", *self.extra],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until(self._ready, 30, "node to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited early: {self.log_path.read_text()[-2000:]}")
        return (self.home / "node.json").exists()

    def cli(self, *args: str, timeout_s: float = 60) -> CliResult:
        return CliResult(
            subprocess.run(
                [sys.executable, "-m", "claudedo_actors", *args],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        )

    def ok(self, *args: str) -> Any:
        res = self.cli(*args, "--json")
        assert res.code == 0, f"claudedo {' '.join(args)} failed: {res.err}"
        return res.json()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def login_url(url: str, user: str, password: str) -> str:
    """`url` with a user and password in it, as a test's own plain NATS client dials it."""
    return url.replace("://", f"://{user}:{password}@", 1)


def home_url(home: Path, role: str = "node") -> str:
    """The NATS URL of the node running on `home`, logged in as one of the home's roles (the
    embedded server refuses clients without credentials); a server without them, as is."""
    url = str(json.loads((home / "node.json").read_text())["nats_url"])
    creds = home / "creds" / f"{role}.json"
    if not creds.exists():
        return url
    data = json.loads(creds.read_text())
    return login_url(url, data["user"], data["password"])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A running node with embedded NATS in a temp home, running no tasks (no slots)."""
    n = NodeProcess(tmp_path / "home").start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop()
