"""The example subscriber (ops/examples/subscriber.py), run as a program of its own with the
reader's credentials against a node doing real work: it sees every event in order, every
event validates against the JSON Schema, and it resumes from the position it stored."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from claudedo_actors.node.home import Home, NodeAddress
from tests.runner_support import Runner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "ops" / "examples" / "subscriber.py"


def _last_seq(runner: Runner) -> int:
    return int(runner.ask("info")["last_seq"])


def _subscribe(runner: Runner, creds: Path, position: Path, until: int) -> list[dict[str, object]]:
    address = NodeAddress.read(Home(runner.node.home))
    assert address is not None
    res = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", address.nats_url, "--creds", str(creds),
         "--position", str(position), "--until-seq", str(until), "--idle-exit", "20"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_the_example_imports_nothing_of_claudedo() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in names}
    assert not roots & {"events", "projections", "claudedo_actors", "tests"}


def test_the_example_sees_and_validates_every_event_and_resumes(
    tmp_path: Path, git_repo: Path
) -> None:
    runner = Runner(tmp_path, slots=1).start()
    try:
        runner.add_list(git_repo, name="watched")
        first = runner.add_task("write it [fake:write]", "watched")
        runner.wait_status(first)
        creds = tmp_path / "reader.json"
        assert runner.node.cli("creds", "reader", "--out", str(creds)).code == 0
        position = tmp_path / "seen.txt"
        last = _last_seq(runner)
        seen = _subscribe(runner, creds, position, last)
        assert [e["seq"] for e in seen] == list(range(1, last + 1))
        assert all(e["valid"] for e in seen)
        types = {e["type"] for e in seen}
        assert {"ListCreated", "TaskCreated", "RunStarted", "RunFinished", "TaskCompleted"} <= types
        audit = runner.ask("audit", task=first)
        assert [e["type"] for e in seen if first in str(e["subject"])] == [e["type"] for e in audit]
        # More work, then the subscriber resumes after the position it stored.
        runner.wait_status(runner.add_task("again [fake:success]", "watched"))
        again = _subscribe(runner, creds, position, _last_seq(runner))
        assert [e["seq"] for e in again] == list(range(last + 1, _last_seq(runner) + 1))
        assert all(e["valid"] for e in again)
    finally:
        runner.stop()
