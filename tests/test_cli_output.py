"""What the CLI says, as a newcomer meets it: one line per action, readable logs, whole lines
when piped, options where they are looked for, errors that name the candidates."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NodeProcess
from tests.runner_support import FAKE, Runner


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(tmp_path_factory.mktemp("cli-output"), slots=2).start()
    yield r
    r.stop()


@pytest.fixture
def demo(runner: Runner, git_repo: Path) -> str:
    name = f"out-{uuid.uuid4().hex[:8]}"
    runner.add_list(git_repo, name)
    return name


def claudedo(
    runner: Runner, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claudedo_actors", *args],
        env={**runner.node.env(), **(env or {})}, capture_output=True, text=True, timeout=60,
        input=stdin if stdin is not None else "",
    )  # fmt: skip


def done_task(runner: Runner, list_name: str, title: str = "Write [fake:write]") -> str:
    task_id = runner.add_task(title, list_name)
    assert runner.wait_status(task_id)["status"] == "done"
    return task_id


# --- 10. --version, and --home before the sub-command -------------------------------------


def test_version_and_home_before_the_sub_command(runner: Runner, demo: str) -> None:
    version = claudedo(runner, "--version")
    assert version.returncode == 0 and re.fullmatch(r"claudedo \d+\.\d+\.\d+\S*\n", version.stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDEDO_")}
    before = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "--home", str(runner.node.home), "list", "ls",
         "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert before.returncode == 0, before.stderr
    assert demo in [row["name"] for row in json.loads(before.stdout)]


# --- 8. every action says what it did, in one line ----------------------------------------


def test_every_action_says_in_one_line_what_it_did(runner: Runner, demo: str) -> None:
    added = claudedo(runner, "task", "add", demo, "Slow [fake:slow]")
    match = re.fullmatch(rf'added task ([0-9a-f]{{8}}) "Slow \[fake:slow\]" to {demo} \(draft\)\n',
                         added.stdout)  # fmt: skip
    assert match, added.stdout
    short = match.group(1)
    quiet = claudedo(runner, "task", "add", demo, "Quiet", "-q").stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", quiet)
    assert claudedo(runner, "task", "queue", short).stdout == f'queued {short} "Slow [fake:slow]"\n'
    task_id = runner.task(short)["id"]
    runner.wait_run(task_id)
    cancel = claudedo(runner, "task", "cancel", short)
    assert cancel.stdout == f"cancel requested for {short} (its slot stops the run)\n"
    runner.wait_status(task_id)
    assert claudedo(runner, "task", "cancel", quiet).stdout == f'cancelled {quiet[:8]} "Quiet"\n'
    full = json.loads(claudedo(runner, "task", "archive", quiet, "--json").stdout)
    assert [t["id"] for t in full] == [quiet] and full[0]["archived_at"] is not None


def test_merge_says_merged_already_merged_or_nothing_to_merge(runner: Runner, demo: str) -> None:
    wrote = done_task(runner, demo)
    branch = f"claudedo/{wrote.replace('-', '')}"
    first = claudedo(runner, "worktree", "merge", wrote)
    assert re.fullmatch(rf"merged {branch} into main \([0-9a-f]{{7}}\)\n", first.stdout)
    again = claudedo(runner, "worktree", "merge", wrote)
    assert again.stdout.startswith(f"already merged: {branch} is in main")
    said_only = done_task(runner, demo, "Say hello")  # the agent changes no file
    nothing = claudedo(runner, "worktree", "merge", said_only)
    assert nothing.stdout.startswith("nothing to merge: claudedo/")
    as_json = claudedo(runner, "worktree", "merge", said_only, "--json")
    assert json.loads(as_json.stdout)["outcome"] == "nothing_to_merge"


# --- 7. what it is about to do, before doing it --------------------------------------------


def test_discarding_a_merged_branch_and_queueing_a_discarded_task_say_so_first(
    runner: Runner, demo: str
) -> None:
    task_id = done_task(runner, demo)
    claudedo(runner, "worktree", "merge", task_id)
    discard = claudedo(runner, "worktree", "discard", task_id)
    assert discard.returncode == 0
    assert discard.stderr.count("\n") == 1 and "was merged into main" in discard.stderr
    assert discard.stdout.startswith(f"discarded claudedo/{task_id.replace('-', '')} of task")
    queue = claudedo(runner, "task", "queue", task_id)
    assert queue.returncode == 0
    assert queue.stderr == (
        f"note: the worktree of task {task_id[:8]} was discarded; queueing makes it again "
        f"from refs/claudedo/kept/{task_id.replace('-', '')}/1\n"
    )
    runner.wait_status(task_id)


# --- 3. an empty diff ----------------------------------------------------------------------


def test_an_empty_diff_says_so_on_stderr(runner: Runner, demo: str) -> None:
    task_id = done_task(runner, demo, "Say hello")
    diff = claudedo(runner, "worktree", "diff", task_id)
    assert diff.returncode == 0 and diff.stdout == ""
    assert diff.stderr.startswith("no changes: the branch claudedo/")
    assert diff.stderr.count("\n") == 1


# --- 4 and 5. tables: list names, and whole lines when piped --------------------------------


def test_task_tables_show_list_names_and_piped_lines_are_not_wrapped(
    runner: Runner, demo: str
) -> None:
    long = "a long description " * 10  # 190 characters, one line
    task_id = runner.add_task("Named", demo, queue=False, description=long)
    rows = claudedo(runner, "tasks", "--list", demo).stdout.splitlines()
    row = next(line for line in rows if line.startswith(task_id[:8]))
    assert demo in row.split()
    shown = claudedo(runner, "task", "show", task_id).stdout
    assert f"list: {demo}" in shown
    assert f"  description: {long.strip()}\n" in shown


# --- 2. watch without a terminal -----------------------------------------------------------


def test_watch_with_stdout_not_a_terminal_prints_one_board_and_exits(runner: Runner) -> None:
    watch = claudedo(runner, "watch")
    assert watch.returncode == 0 and "ClaudeDo board" in watch.stdout


# --- 12. descriptions from a file or stdin -------------------------------------------------


def test_a_description_comes_from_a_file_or_stdin_and_help_names_the_limit(
    runner: Runner, demo: str, tmp_path: Path
) -> None:
    text = tmp_path / "desc.md"
    text.write_text("# Plan\n\nFirst this, then that.\n")
    from_file = claudedo(runner, "task", "add", demo, "F", "-d", f"@{text}", "--json")
    assert json.loads(from_file.stdout)["description"] == "# Plan\n\nFirst this, then that."
    from_stdin = claudedo(runner, "task", "add", demo, "S", "-d", "-", "--json", stdin="piped\n")
    assert json.loads(from_stdin.stdout)["description"] == "piped"
    edited = claudedo(runner, "task", "edit", json.loads(from_stdin.stdout)["id"], "-d",
                      f"@{text}", "--json")  # fmt: skip
    assert json.loads(edited.stdout)["description"].startswith("# Plan")
    missing = claudedo(runner, "task", "add", demo, "M", "-d", f"@{tmp_path / 'nope'}")
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot read the desc")
    big = tmp_path / "big.txt"
    big.write_text("x" * 100_001)
    too_long = claudedo(runner, "task", "add", demo, "B", "-d", f"@{big}")
    assert too_long.returncode == 1
    assert too_long.stderr == (
        "error: the description is 100,001 characters; at most 100,000 are taken\n"
    )
    help_text = " ".join(claudedo(runner, "task", "add", "--help").stdout.split())
    assert "at most 100,000 characters" in help_text and "@FILE" in help_text


# --- 13. an ambiguous prefix lists its candidates ------------------------------------------


def test_an_ambiguous_prefix_lists_its_candidates(runner: Runner, demo: str) -> None:
    for i in range(24):
        runner.add_task(f"Candidate {i}", demo, queue=False)
    titles = {t["id"]: t["title"] for t in runner.ask("tasks", archived=True)}
    shared = next(
        c for c in "0123456789abcdef" if sum(t.startswith(c) for t in titles) in range(2, 6)
    )
    candidates = ", ".join(
        f"{t[:8]}… ({titles[t]})" for t in sorted(titles) if t.startswith(shared)
    )
    res = claudedo(runner, "task", "show", shared)
    assert res.returncode == 1
    assert res.stderr == f"error: ambiguous id '{shared}': {candidates}\n"


# --- 15. a large sql result ----------------------------------------------------------------


def test_a_large_sql_result_is_capped_with_a_note_and_json_has_every_row(runner: Runner) -> None:
    query = "select range AS n from range(2500)"
    started = time.monotonic()
    table = claudedo(runner, "sql", query)
    assert time.monotonic() - started < 30
    lines = table.stdout.splitlines()
    assert lines[-1] == "(showing 1000 of 2500 rows; --max-rows or --json for all)"
    assert len(lines) == 2 + 1000 + 1
    assert claudedo(runner, "sql", query, "--max-rows", "0").stdout.endswith("2500 rows\n")
    assert len(json.loads(claudedo(runner, "sql", query, "--json").stdout)) == 2500


# --- 6 and 14. log: readable, raw, JSON; without a node -------------------------------------


def test_log_is_readable_raw_or_json(runner: Runner, demo: str) -> None:
    task_id = done_task(runner, demo, "Say hello")
    path = Path(runner.ask("runs", task=task_id)[0]["log_path"])
    raw = claudedo(runner, "log", task_id, "--raw")
    assert raw.stdout.encode() == path.read_bytes()
    assert claudedo(runner, "log", task_id, "--json").stdout == raw.stdout
    assert claudedo(runner, "log", task_id).stdout == raw.stdout  # piped: the NDJSON
    readable = claudedo(runner, "log", task_id, "--readable").stdout
    assert readable.startswith("· started: session ")
    assert "= succeeded" in readable and '"type"' not in readable
    said = next(
        block["text"]
        for line in path.read_text().splitlines()
        if (obj := json.loads(line)).get("type") == "assistant"
        for block in obj["message"]["content"]
        if block.get("type") == "text"
    )
    assert said.split("\n")[0] in readable
    both = claudedo(runner, "log", task_id, "--readable", "--raw")
    assert both.returncode == 2 and both.stderr.count("\n") == 1


def test_log_reads_a_finished_runs_file_with_no_node_running(
    tmp_path: Path, git_repo: Path
) -> None:
    r = Runner(tmp_path, slots=1).start()
    try:
        r.add_list(git_repo)
        task_id = r.add_task("Say hello")
        r.wait_status(task_id)
        path = Path(r.ask("runs", task=task_id)[0]["log_path"])
    finally:
        r.stop()
    raw = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "log", task_id[:6]],
        env=r.node.env(), capture_output=True, timeout=60,
    )  # fmt: skip
    assert raw.returncode == 0 and raw.stdout == path.read_bytes()
    readable = r.node.cli("log", task_id[:6], "--readable")
    assert readable.code == 0 and "= succeeded" in readable.out
    missing = r.node.cli("log", "ffff")
    assert missing.code == 1 and "no node running" in missing.err and "no log" in missing.err
    follow = r.node.cli("log", task_id, "--follow")
    assert follow.code == 1 and "no node running" in follow.err


# --- 14. watch goes on when the node restarts ---------------------------------------------


def _read_until(fd: int, wanted: str, timeout_s: float) -> str:
    """What a terminal showed until `wanted` appeared in it (within the deadline)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{wanted!r} not shown within {timeout_s}s: {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode(errors="replace")


def test_live_watch_waits_for_a_restarted_node(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "home").start()
    main, child = pty.openpty()
    watch = subprocess.Popen(
        [sys.executable, "-m", "claudedo_actors", "watch", "--interval", "0.1"],
        env=node.env(), stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    try:
        _read_until(main, "ClaudeDo board", 30)
        node.stop()
        _read_until(main, "no node running", 30)
        assert watch.poll() is None
        node.start()
        _read_until(main, "ClaudeDo board", 30)
        assert watch.poll() is None
    finally:
        watch.terminate()
        watch.wait(10)
        os.close(main)
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


# --- 11. up warns when the agent is missing ------------------------------------------------


def test_up_warns_at_start_when_the_agent_binary_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-claude"
    node = NodeProcess(tmp_path / "home", ["--slots", "1", "--claude-bin", str(missing)]).start()
    try:
        warnings = [line for line in node.log_path.read_text().splitlines() if "warning:" in line]
        assert warnings == [
            f"warning: the agent binary '{missing}' is not an executable file: runs will fail "
            "with spawn_failed (install Claude Code, or give --claude-bin PATH)"
        ]
    finally:
        node.stop()
    found = NodeProcess(tmp_path / "home2", ["--slots", "1", "--claude-bin", str(FAKE)]).start()
    try:
        assert "warning:" not in found.log_path.read_text()
    finally:
        found.stop()
