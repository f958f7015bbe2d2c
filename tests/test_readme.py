"""The README's tour runs as it is written: its shell blocks, run with bash against a real
node (the fake agent in place of Claude Code) in a temp home, so the tour cannot go stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.runner_support import Runner

ROOT = Path(__file__).resolve().parent.parent


def tour_blocks() -> list[str]:
    """The ```sh blocks of the README's "A 5-minute tour" section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


def test_the_tour_uses_no_placeholder_ids_and_no_fixed_temp_paths() -> None:
    tour = "\n".join(tour_blocks())
    assert tour and "/tmp" not in tour
    assert not re.search(r"\b[0-9a-f]{4,8}\b(?!-)", re.sub(r"#.*", "", tour))


def test_the_readme_tour_runs(tmp_path: Path) -> None:
    # The task the tour cancels runs until it is stopped, as a real agent's would.
    runner = Runner(tmp_path, slots=2, env={"FAKE_CLAUDE_SCENARIOS": '{"Rust": "slow"}'}).start()
    try:
        work = tmp_path / "work"
        work.mkdir()
        env = {
            **runner.node.env(),
            # The folder the tour starts in has no venv: its claudedo is this interpreter's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "TMPDIR": str(tmp_path),
        }  # fmt: skip
        script = "set -euo pipefail\n" + "\n".join(tour_blocks())
        proc = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
            timeout=240, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        assert re.search(r"^claudedo \d", proc.stdout, flags=re.M)
        assert "/login?token=" in proc.stdout
        assert (work / "audit-export").is_dir() and (work / "reader.json").is_file()
        # The tour leaves nothing under way.
        runner.wait_status(runner.ask("tasks", archived=True)[-1]["id"])
        statuses = {t["title"]: t["status"] for t in runner.ask("tasks", archived=True)}
        assert statuses == {
            "Add retry to the HTTP client": "done",
            "Changelog": "done",
            "Rewrite it in Rust": "cancelled",
        }
    finally:
        runner.stop()
