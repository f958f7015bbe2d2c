"""The Run actor: one agent process, from spawn to the outcome it reports to its slot."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pykka

import events as ev
from claudedo_actors.agent.process import AgentProcess, kill_run
from claudedo_actors.agent.run_output import RunOutput
from claudedo_actors.agent.stream_json import RunOutcome, SessionInfo, StreamJsonReader
from claudedo_actors.runner import faults
from claudedo_actors.runner.messages import (
    CancelRun,
    ProcessExited,
    SessionOpened,
    StopForShutdown,
    TimeIsUp,
)
from claudedo_actors.runner.ports import TaskLog
from claudedo_actors.runner.task_writer import LostTask, TaskWriter

log = logging.getLogger("claudedo.run")

_INTERRUPT_GRACE_S = 5.0


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one run needs: what to execute, where, and for how long."""

    task_id: str
    run_number: int
    argv: tuple[str, ...]
    cwd: str
    prompt: str
    log_path: str
    timeout_s: float | None = None
    node_id: str = ""  # marks every process of the run (agent/process.py NODE_MARK)


def run_mark(task_id: str, run_number: int) -> str:
    """The mark every process of a run carries (agent_process.RUN_MARK); found after a crash."""
    return f"{task_id}.{run_number}"


class RunActor(pykka.ThreadingActor):
    """Spawns the agent, streams its lines, and tells `on_end(run_number, outcome)` once."""

    def __init__(
        self,
        spec: RunSpec,
        writer: TaskWriter,
        facade: TaskLog,
        env: Mapping[str, str],
        on_end: Callable[[int, RunOutcome], None],
        on_line: Callable[[str, int, bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self._writer = writer
        self._facade = facade
        self._env = dict(env)
        self._on_end = on_end
        self._on_line_seen = on_line
        self._reader = StreamJsonReader()
        self._output: RunOutput | None = None
        self._proc: AgentProcess | None = None
        self._timer: threading.Timer | None = None
        self._cancelled = False
        self._timed_out = False
        self._ended = False

    # --- lifecycle ---------------------------------------------------------------------

    def on_start(self) -> None:
        # pykka stops an actor whose on_start fails without calling on_failure: do it here.
        try:
            self._spawn()
        except Exception as exc:
            self.on_failure(type(exc), exc, exc.__traceback__)
            raise

    def _spawn(self) -> None:
        spec = self.spec
        try:
            self._output = RunOutput(
                Path(spec.log_path),
                spec.task_id,
                spec.run_number,
                self._facade.publish,
                self._facade.max_payload,
            )
        except OSError as exc:  # the log folder cannot be made or written: no run without it
            error = f"Cannot write the run's log {spec.log_path}: {exc.strerror or exc}"
            self._end(outcome_without_result("log_failed", error, self._reader))
            return
        try:
            self._proc = AgentProcess(
                spec.argv,
                Path(spec.cwd),
                self._env,
                spec.prompt,
                run_mark(spec.task_id, spec.run_number),
                self._line,
                spec.node_id,
            )
        except OSError as exc:
            error = f"Cannot start {spec.argv[0]}: {exc.strerror or exc}"
            self._end(outcome_without_result("spawn_failed", error, self._reader))
            return
        self._writer.append(
            ev.RunProcessSpawned(
                run_number=spec.run_number,
                pid=self._proc.pid,
                pid_started_at=self._proc.started_at,
                argv=spec.argv,
            )
        )
        proc, me = self._proc, self.actor_ref
        threading.Thread(
            target=lambda: me.tell(ProcessExited(proc.wait())), daemon=True, name="run-wait"
        ).start()
        if spec.timeout_s is not None:
            self._timer = threading.Timer(spec.timeout_s, lambda: me.tell(TimeIsUp()))
            self._timer.daemon = True
            self._timer.start()

    def on_receive(self, message: Any) -> Any:
        match message:
            case SessionOpened(info=info):
                self._session_opened(info)
            case ProcessExited(exit_code=code):
                self._exited(code)
            case CancelRun():
                self._stop_process(cancelled=True)
            case TimeIsUp():
                self._stop_process(timed_out=True)
            case StopForShutdown():
                return self._stop_for_shutdown()
            case _:
                return super().on_receive(message)
        return None

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # A crash of this actor still ends its run: nothing left running, an outcome told.
        log.error("run %d of task %s crashed: %s", self.spec.run_number, self.spec.task_id[:8],
                  exc_value, exc_info=exc_value)  # fmt: skip
        self._kill()
        if not self._ended:
            self._end(
                outcome_without_result("agent_error", f"Internal error: {exc_value}", self._reader)
            )

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    # --- internals -----------------------------------------------------------------------

    def _session_opened(self, info: SessionInfo) -> None:
        faults.at("run.session_opened")
        try:
            self._writer.append(
                ev.RunSessionOpened(
                    run_number=self.spec.run_number,
                    session_id=info.session_id,
                    cli_version=info.cli_version,
                    model=info.model,
                    permission_mode=info.permission_mode,
                )
            )
        except LostTask as exc:
            # Another node settled the task (this one's heartbeats did not reach it): stop.
            log.warning("run %d: %s; stopping the agent", self.spec.run_number, exc)
            self._stop_process(cancelled=True)

    def _exited(self, exit_code: int | None) -> None:
        if self._ended:
            return
        kill_run(run_mark(self.spec.task_id, self.spec.run_number))  # tool children left
        self._end(self._outcome(exit_code))

    def _stop_process(self, cancelled: bool = False, timed_out: bool = False) -> None:
        if self._ended or self._cancelled or self._timed_out:
            return
        self._cancelled, self._timed_out = cancelled, timed_out
        code = self._proc.stop(_INTERRUPT_GRACE_S) if self._proc is not None else None
        self._end(self._outcome(code))

    def _stop_for_shutdown(self) -> RunOutcome | None:
        """The node stops: end the process and return the outcome (nobody is told)."""
        if self._ended:
            return None
        self._ended = True
        code = self._proc.stop(_INTERRUPT_GRACE_S) if self._proc is not None else None
        outcome = self._outcome(code)
        self._close()  # the log file, and the end marker live readers wait for
        self.actor_ref.stop(block=False)
        return outcome

    def _line(self, line: bytes) -> None:
        """Runs in the process's reader thread: file, live subject, parser."""
        assert self._output is not None
        self._output.write(line)
        info = self._reader.feed(line)
        if info is not None:
            self.actor_ref.tell(SessionOpened(info))
        if self._on_line_seen is not None:
            self._on_line_seen(self.spec.task_id, self.spec.run_number, line)

    def _outcome(self, exit_code: int | None) -> RunOutcome:
        stderr = self._proc.stderr_tail() if self._proc is not None else ""
        outcome = self._reader.outcome(
            exit_code, stderr, cancelled=self._cancelled, timed_out=self._timed_out
        )
        if self._cancelled:
            # The reference finalizes a cancelled run with exit code -1.
            outcome = msgspec.structs.replace(outcome, exit_code=-1)
        failed = self._output.write_error if self._output is not None else None
        if failed is not None and outcome.cause not in ("cancelled", "timeout"):
            outcome = msgspec.structs.replace(
                outcome, success=False, cause="log_failed", error=failed
            )
        return outcome

    def _end(self, outcome: RunOutcome) -> None:
        self._ended = True
        self._close()
        self._on_end(self.spec.run_number, outcome)
        self.actor_ref.stop(block=False)

    def _close(self) -> None:
        if self._output is not None:
            self._output.close()
        if self._timer is not None:
            self._timer.cancel()

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stop(0.5)
            except Exception:
                log.exception("while killing run %d", self.spec.run_number)
        kill_run(run_mark(self.spec.task_id, self.spec.run_number))


def outcome_without_result(
    cause: str, error: str, reader: StreamJsonReader | None = None
) -> RunOutcome:
    """The outcome of a run that ended without the agent reporting one."""
    base = (reader or StreamJsonReader()).outcome(None)
    return msgspec.structs.replace(base, success=False, cause=cause, error=error)
