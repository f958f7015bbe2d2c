"""One agent process: started in its own process group, read line by line, stopped for good.

Claude Code's Bash tool runs commands in sessions of their own, so killing the agent's process
group leaves them running (measured with 2.1.197). Every process of a run therefore carries
CLAUDEDO_RUN_ID in its environment (children inherit it), and stopping a run ends with a sweep
that kills every process still carrying that mark, wherever it was reparented. Stopping
interrupts first (SIGINT makes the CLI stop its tools and print a result), then escalates.

An agent never outlives its node for long: on Linux the kernel sends it SIGTERM when the node
dies (kill -9 included; Claude Code then stops its tools), and every process also carries
CLAUDEDO_NODE_ID, by which the node's next start kills whatever of its runs is still alive,
whoever settled their tasks since.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

RUN_MARK = "CLAUDEDO_RUN_ID"
NODE_MARK = "CLAUDEDO_NODE_ID"
_PR_SET_PDEATHSIG = 1
_prctl: Any = None
with contextlib.suppress(OSError, AttributeError):  # resolved here: the child only calls it
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def _die_with_node() -> None:
    """In the child before exec: SIGTERM when the node's thread that started it ends."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv when it can set the death signal, else None (asked once, at the
    first agent's start)."""
    found = shutil.which("setpriv")
    if found is None or _prctl is None:
        return None
    try:
        usage = subprocess.run(
            [found, "--help"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if "--pdeathsig" in usage else None


def death_signal_argv(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command and the pre-exec hook that give the agent its death signal.

    A pre-exec hook makes Python fork the node (about 20 ms for a node of 150 MiB with a dozen
    threads, docs/benchmarks.md) where it would otherwise spawn without copying it (0.3 ms);
    `setpriv --pdeathsig` sets the same signal in the child and then execs the agent, so the
    hook is only the fallback where setpriv is missing."""
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "TERM", "--", *argv], None
    return list(argv), _die_with_node


_STDERR_TAIL_BYTES = 16_384


def processes_of_run(run_id: str) -> list[psutil.Process]:
    """Every live process whose environment carries this run's mark."""
    mark = f"{RUN_MARK}={run_id}".encode()
    found = []
    for proc in psutil.process_iter():
        try:
            if _carries(proc, mark) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _carries(proc: psutil.Process, mark: bytes) -> bool:
    """Whether `NAME=value` is one of the process's environment entries.

    On Linux the raw environment block is searched (a run ends with a sweep over every
    process: parsing each one's environment into a dict cost more than the rest of the run's
    bookkeeping); elsewhere psutil parses it.
    """
    try:
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            block = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise psutil.NoSuchProcess(proc.pid) from None
        name, _, value = mark.decode().partition("=")
        return bool(proc.environ().get(name) == value)
    return block.startswith(mark + b"\0") or b"\0" + mark + b"\0" in block


def processes_of_node(node_id: str) -> list[psutil.Process]:
    """Every live process of any run the node started (never the caller itself)."""
    mark = f"{NODE_MARK}={node_id}".encode()
    found = []
    for proc in psutil.process_iter():
        try:
            mine = proc.pid != os.getpid() and _carries(proc, mark)
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def kill_node_processes(node_id: str) -> int:
    """SIGKILL what is left of the node's runs (at its start: none of them can be live)."""
    return _kill(processes_of_node(node_id))


def kill_run(run_id: str) -> int:
    """SIGKILL every process of the run (and its process group); returns how many were alive."""
    return _kill(processes_of_run(run_id))


def _kill(victims: list[psutil.Process]) -> int:
    for proc in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=5)
    return len(victims)


class AgentProcess:
    """A started agent: lines go to `on_line` from a reader thread; `stop` leaves nothing."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        prompt: str,
        run_id: str,
        on_line: Callable[[bytes], None],
        node_id: str = "",
    ) -> None:
        self.run_id = run_id
        self._on_line = on_line
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        command, pre_exec = death_signal_argv(argv)
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**env, RUN_MARK: run_id, NODE_MARK: node_id},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: signals reach all of it at once
            preexec_fn=pre_exec,
        )
        self.started_at = psutil.Process(self.proc.pid).create_time()
        self._out = threading.Thread(target=self._read_stdout, daemon=True, name="agent-out")
        self._err = threading.Thread(target=self._read_stderr, daemon=True, name="agent-err")
        self._out.start()
        self._err.start()
        # The prompt goes on stdin from a thread: a large prompt must not block on a full pipe.
        threading.Thread(target=self._write_prompt, args=(prompt,), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _write_prompt(self, prompt: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(prompt.encode())
            self.proc.stdin.close()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # any length: a 10 MB line is one line
            self._on_line(line.rstrip(b"\n"))

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        while chunk := os.read(stream.fileno(), 4096):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > _STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-_STDERR_TAIL_BYTES:]

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit code, once the process ended and its output was read (None: still running)."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._drain()
        return code

    def _drain(self) -> None:
        # Output is read to its end unless a leftover process holds the pipe: then the sweep
        # in stop() ends it; the threads never hold up a shutdown (they are daemons).
        self._out.join(5)
        self._err.join(1)

    def stop(self, grace_s: float = 5.0) -> int | None:
        """Interrupt, escalate, and kill every process of the run. Returns the exit code."""
        steps = ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0))
        for sig, wait_s in steps:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + wait_s
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)  # waiting for a process to exit: nothing to wait on
        code = self.proc.wait()
        kill_run(self.run_id)  # tool children in their own sessions, wherever they are now
        self._drain()
        return code
