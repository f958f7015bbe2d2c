"""The lines of one run: kept in its NDJSON file and published live on `claudedo.out.<task>.<run>`.

A line larger than what one NATS message may carry is published in parts (headers
`ClaudeDo-Line`, `ClaudeDo-Part: i/n`), never dropped. When the run ends, a last message with
`ClaudeDo-End: <line count>` tells live readers there is nothing more.

A write to the file that fails (a full disk) is remembered, not raised: the run goes on and
its lines are still published live, but the run cannot succeed without its record
(`write_error`, cause `log_failed`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import events as ev

LINE_HEADER = "ClaudeDo-Line"
PART_HEADER = "ClaudeDo-Part"
END_HEADER = "ClaudeDo-End"
# Room left in a message for the subject and headers.
_HEADROOM = 4096

Publish = Callable[[str, bytes, dict[str, str]], None]


class RunOutput:
    """Append-only writer of one run's transcript; thread-confined to the run's reader."""

    def __init__(
        self, path: Path, task_id: str, run_number: int, publish: Publish, max_payload: int
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.subject = ev.output_subject(task_id, run_number)
        self._publish = publish
        self._chunk = max(1024, max_payload - _HEADROOM)
        self._file = open(path, "ab")  # noqa: SIM115 - open for the run's life, closed in close()
        self.line_count = 0
        self.last_line = b""
        self.write_error: str | None = None

    def write(self, line: bytes) -> None:
        self.line_count += 1
        self.last_line = line
        if self.write_error is None:
            try:
                self._file.write(line + b"\n")
                self._file.flush()  # `claudedo log` reads the file while the run goes on
            except OSError as exc:
                self.write_error = _why(self.path, exc)
        n = str(self.line_count)
        if len(line) <= self._chunk:
            self._publish(self.subject, line, {LINE_HEADER: n})
            return
        parts = [line[i : i + self._chunk] for i in range(0, len(line), self._chunk)]
        for i, part in enumerate(parts, 1):
            self._publish(self.subject, part, {LINE_HEADER: n, PART_HEADER: f"{i}/{len(parts)}"})

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:  # what was buffered could not be written either
                self.write_error = self.write_error or _why(self.path, exc)
            self._publish(self.subject, b"", {END_HEADER: str(self.line_count)})


def _why(path: Path, exc: OSError) -> str:
    return f"Cannot write the run's log {path}: {exc.strerror or exc}"


def log_path(logs_dir: Path, task_id: str, run_number: int) -> Path:
    """`<log_root>/<task_id>_run<N>.ndjson`, as the reference names it."""
    return logs_dir / f"{task_id}_run{run_number}.ndjson"
