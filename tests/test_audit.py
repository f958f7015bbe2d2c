"""`claudedo audit verify` and `audit export` on a real node that ran real tasks: a clean log
verifies, and each kind of tampering (a transcript line edited, a transcript deleted, a branch
rewritten, an event forged with the node's credentials or a fake key, an export edited) is
reported in one line with a non-zero exit. A reader cannot forge at all: the server refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

import events as ev
from claudedo_actors.node.home import Home, NodeAddress
from events.audit import SigningKey, checkpoint_message, sha256_hex
from events.checkpoints import LogCheckpointed
from events.credentials import Credential
from events.log import STREAM
from tests.api_support import make_repo
from tests.conftest import wait_until
from tests.runner_support import Runner, git_out

ORIGIN = ev.Origin(node_id="intruder", correlation_id="", actor="user:mallory")


def _start(tmp: Path, name: str = "home") -> Runner:
    # Checkpoints half a second after work, not a minute: the tests wait for one.
    env = {"FAKE_CLAUDE_SCENARIO": "write", "CLAUDEDO_CHECKPOINT_INTERVAL_S": "0.5"}
    return Runner(tmp, slots=2, env=env, name=name).start()


def verify(runner: Runner, *args: str) -> tuple[int, dict[str, Any]]:
    res = runner.node.cli("audit", "verify", *args, "--json", timeout_s=120)
    assert res.code in (0, 1), res.err
    return res.code, json.loads(res.out)


def whats(report: dict[str, Any]) -> list[str]:
    return [f"{d['where']}: {d['what']}" for d in report["discrepancies"]]


def _checkpointed(runner: Runner) -> bool:
    """The node's last checkpoint vouches for everything before it (nothing else pending)."""
    code, report = verify(runner, "--no-output")
    return (
        code == 0
        and report["checkpoints"] >= 1
        and report["vouched_upto"] == (report["last_seq"] - 1)
    )


class Work:
    """A node that ran four tasks to done (each made a commit), checkpointed, and exported."""

    def __init__(self, runner: Runner, repo: Path, tasks: list[str], export: Path) -> None:
        self.runner, self.repo, self.tasks, self.export = runner, repo, tasks, export

    def transcript(self, task: str, run: int = 1) -> Path:
        return self.runner.node.home / "logs" / f"{task}_run{run}.ndjson"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Work]:
    tmp = tmp_path_factory.mktemp("audit")
    runner = _start(tmp)
    try:
        repo = make_repo(tmp / "repo")
        runner.add_list(repo, "audited")
        tasks = [runner.add_task(f"task {i}", "audited") for i in range(4)]
        for task in tasks:
            assert runner.wait_status(task)["status"] == "done"
        wait_until(lambda: _checkpointed(runner), 60, "a checkpoint of all the work")
        export = tmp / "export"
        res = runner.node.cli("audit", "export", str(export))
        assert res.code == 0, res.err
        yield Work(runner, repo, tasks, export)
    finally:
        runner.stop()


def test_a_clean_log_verifies_with_every_transcript_output_and_commit_checked(
    work: Work,
) -> None:
    res = work.runner.node.cli("audit", "verify")
    assert res.code == 0, res.out + res.err
    assert res.out.startswith("verified: ")
    code, report = verify(work.runner)
    assert code == 0 and report["ok"], whats(report)
    assert report["unchained"] == 0 and report["chained"] == report["messages"]
    # Each transcript file is the bytes its RunFinished describes (count and SHA-256).
    assert report["transcripts_checked"] == len(work.tasks)
    assert report["outputs_checked"] == len(work.tasks)
    assert report["commits_checked"] >= len(work.tasks)


def test_an_edited_transcript_line_is_reported(work: Work) -> None:
    task = work.tasks[0]
    path = work.transcript(task)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"type"', b'"type" ', 1)
    try:
        path.write_bytes(b"".join(lines))
        code, report = verify(work.runner, task)
        assert code == 1
        assert any(task in line and "hashes to" in line for line in whats(report)), report
        res = work.runner.node.cli("audit", "verify", task)
        assert res.code == 1 and "hashes to" in res.out and "1 discrepancy" in res.out
    finally:
        path.write_bytes(original)
    assert verify(work.runner, task)[0] == 0


def test_a_deleted_transcript_is_reported(work: Work) -> None:
    task = work.tasks[1]
    path = work.transcript(task)
    kept = path.with_suffix(".kept")
    path.rename(kept)
    try:
        code, report = verify(work.runner, task)
        assert code == 1
        assert any(task in line and "missing" in line for line in whats(report)), report
    finally:
        kept.rename(path)
    assert verify(work.runner, task)[0] == 0


def test_a_rewritten_branch_whose_commit_is_gone_is_reported(work: Work) -> None:
    task = work.tasks[2]
    worktree = Path(work.runner.task(task)["worktree"]["path"])
    commit = git_out(worktree, "rev-parse", "HEAD")
    git_out(worktree, "reset", "-q", "--hard", "HEAD~1")
    for where in (worktree, work.repo):
        git_out(where, "reflog", "expire", "--expire=now", "--all")
    git_out(work.repo, "gc", "-q", "--prune=now")
    code, report = verify(work.runner, task)
    assert code == 1
    assert any(commit[:12] in line for line in whats(report)), report
    # The other tasks' commits are still there.
    assert verify(work.runner, work.tasks[3])[0] == 0


def _cred(runner: Runner, role: str) -> Credential:
    return Credential.read(runner.node.home / "creds" / f"{role}.json")


def _url(runner: Runner) -> str:
    address = NodeAddress.read(Home(runner.node.home))
    assert address is not None
    return address.nats_url


def _publish(runner: Runner, role: str, subject: str, data: bytes) -> str:
    """Publish as `role` and wait for JetStream's answer: "ack" or the error it got."""

    async def go() -> str:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            _url(runner), **_cred(runner, role).nats_options(), error_cb=on_error,
            allow_reconnect=False,
        )  # fmt: skip
        try:
            await nc.jetstream().publish(subject, data, timeout=3)
            return "ack"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc} {errors}"
        finally:
            await nc.close()

    return asyncio.run(go())


def test_an_event_forged_with_the_readers_credentials_is_refused_by_the_server(
    work: Work,
) -> None:
    task = work.tasks[3]
    forged = ev.envelop(ev.TaskCompleted(result="forged"), task, ORIGIN)
    ours = "select count(*) as n from events where aggregate <> 'log'"  # not checkpoints
    before = work.runner.node.ok("sql", ours)
    outcome = _publish(work.runner, "reader", forged.subject, ev.encode(forged))
    assert outcome != "ack"
    code, _ = verify(work.runner, "--no-output", task)
    assert work.runner.node.ok("sql", ours) == before and code == 0
    assert work.runner.task(task)["result"] != "forged"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Runner]:
    """A node of its own for the tests that forge into its log."""
    runner = _start(tmp_path, "forged")
    try:
        runner.add_list(None, "empty")
        wait_until(lambda: _checkpointed(runner), 60, "a first checkpoint")
        yield runner
    finally:
        runner.stop()


def test_an_event_forged_with_the_nodes_credentials_breaks_its_chain(fresh: Runner) -> None:
    (row,) = fresh.ask("list.ls")
    forged = ev.envelop(ev.ListConfigured(name="renamed by mallory"), row["id"], ORIGIN)
    assert _publish(fresh, "node", forged.subject, ev.encode(forged)) == "ack"
    code, report = verify(fresh, "--no-output")
    assert code == 1
    assert any("no hash chain" in line for line in whats(report)), report
    # With a made-up prev it is a broken chain.
    fake_prev = msgspec.structs.replace(forged, prev=sha256_hex(b"made up"))
    forged2 = msgspec.structs.replace(fake_prev, event_id=ev.new_event_id())
    assert _publish(fresh, "node", forged2.subject, ev.encode(forged2)) == "ack"
    code, report = verify(fresh, "--no-output")
    assert any("chain broken" in line for line in whats(report)), report


def test_a_checkpoint_signed_with_a_fake_key_is_reported(fresh: Runner) -> None:
    fake = SigningKey(SigningKey.new_seed())
    last = verify(fresh, "--no-output")[1]["last_seq"]
    # Signed over a made-up hash: the key is not one this home trusts.
    made_up = sha256_hex(b"whatever")
    event = LogCheckpointed(
        node_id="intruder", stream=STREAM, upto_seq=last, log_hash=made_up, key=fake.public_hex,
        signature=fake.sign(checkpoint_message(STREAM, last, made_up)),
    )  # fmt: skip
    env = msgspec.structs.replace(ev.envelop(event, fake.id, ORIGIN), prev=None)
    assert _publish(fresh, "node", env.subject, ev.encode(env)) == "ack"
    code, report = verify(fresh, "--no-output")
    assert code == 1
    assert any(f"key {fake.id}, which is not trusted" in line for line in whats(report)), report
    # Trusting the fake key (as --keys): its signature holds, its hash does not.
    keys = fresh.node.home.parent / "fake-keys"
    keys.mkdir()
    (keys / f"{fake.id}.pub").write_text(fake.public_hex + "\n")
    code, report = verify(fresh, "--no-output", "--keys", str(keys))
    assert code == 1
    assert any(f"but key {fake.id} signed" in line for line in whats(report)), report


# --- the export, verified offline ---------------------------------------------------------


def offline(export: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """`audit verify --export` in a process with no node, no home and no NATS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDEDO_", "NATS"))}
    env["CLAUDEDO_HOME"] = str(export.parent / "no-home-here")
    res = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "audit", "verify", "--export", str(export),
         *args, "--json"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def _keys(work: Work) -> str:
    """The public keys the auditor trusts: the node's, taken from its home beforehand."""
    return str(work.runner.node.home / "keys" / "trusted")


def _copy(export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(export, target)
    return target


def test_an_export_verifies_offline(work: Work) -> None:
    manifest = json.loads((work.export / "MANIFEST.json").read_text())
    assert manifest["format"] == "claudedo-audit-export" and manifest["git"] is True
    code, report, _ = offline(work.export, "--keys", _keys(work))
    assert code == 0, whats(report)
    assert report["checkpoints"] >= 1 and report["vouched_upto"] == report["last_seq"] - 1
    assert report["transcripts_checked"] == len(work.tasks)
    assert report["commits_checked"] >= len(work.tasks)
    assert not (work.export.parent / "no-home-here").exists()


def test_an_export_is_never_written_over(work: Work) -> None:
    res = work.runner.node.cli("audit", "export", str(work.export))
    assert res.code != 0 and "not an empty folder" in res.err
    assert len(res.err.strip().splitlines()) == 1


def _edit_log_line(export: Path, fix_manifest: bool) -> None:
    log = export / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"title":"task 1"' in line.replace(b'\\"', b'"'))
    lines[i] = lines[i].replace(b"task 1", b"task X", 1)
    log.write_bytes(b"".join(lines))
    if fix_manifest:
        manifest = json.loads((export / "MANIFEST.json").read_text())
        manifest["log_sha256"] = sha256_hex(log.read_bytes())
        (export / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("fix_manifest", [False, True], ids=["as-is", "manifest-fixed"])
def test_an_edited_event_in_an_export_is_caught(
    work: Work, tmp_path: Path, fix_manifest: bool
) -> None:
    export = _copy(work.export, tmp_path)
    _edit_log_line(export, fix_manifest)
    code, report, _ = offline(export, "--keys", _keys(work))
    assert code == 1
    found = whats(report)
    # The next event of the task no longer chains to it, and the checkpoints' hash differs.
    assert any("chain broken" in line for line in found), found
    assert any("hashes to" in line and "signed" in line for line in found), found
    assert any("manifest" in line for line in found) != fix_manifest, found


def test_an_edited_transcript_in_an_export_is_caught(work: Work, tmp_path: Path) -> None:
    export = _copy(work.export, tmp_path)
    task = work.tasks[3]
    path = export / "transcripts" / f"{task}_run1.ndjson"
    path.write_bytes(path.read_bytes() + b'{"type":"assistant","forged":true}\n')
    code, report, _ = offline(export, "--keys", _keys(work))
    assert code == 1
    assert any(task[:8] in line for line in whats(report)), whats(report)


def test_an_export_checked_against_other_keys_is_caught(work: Work, tmp_path: Path) -> None:
    keys = tmp_path / "auditor-keys"
    keys.mkdir()
    other = SigningKey(SigningKey.new_seed())
    (keys / f"{other.id}.pub").write_text(other.public_hex + "\n")
    code, report, _ = offline(work.export, "--keys", str(keys))
    assert code == 1
    assert all("not trusted" in line for line in whats(report)), whats(report)


def test_an_export_is_verified_only_against_keys_the_auditor_names(work: Work) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDEDO_")}
    res = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "audit", "verify", "--export", str(work.export)],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode != 0 and "give --keys DIR" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    code, report, _ = offline(work.export, "--trust-export-keys")
    assert code == 0 and any("keys the export carries" in n for n in report["notes"])


def _forge(export: Path, key: SigningKey) -> None:
    """Rewrite an export as a forger would: one event changed, every chain and the log hash
    computed again, the checkpoints replaced by one signed with the forger's key, whose
    public key is shipped in the export, and the manifest fixed."""
    import hashlib

    from events.audit import chained, next_log_hash

    lines = [json.loads(line) for line in (export / "log.jsonl").read_text().splitlines()]
    envs = [ev.decode(line["data"].encode()) for line in lines]
    envs = [e for e in envs if not isinstance(e.event, LogCheckpointed)]
    i = next(n for n, e in enumerate(envs) if isinstance(e.event, ev.TaskCreated))
    envs[i] = msgspec.structs.replace(
        envs[i], event=msgspec.structs.replace(envs[i].event, title="forged title")
    )
    data = chained(envs)
    log_hash = bytes(32)
    for seq, (env, raw) in enumerate(zip(envs, data, strict=True), 1):
        log_hash = next_log_hash(log_hash, seq, env.subject, hashlib.sha256(raw).digest())
    upto, h = len(data), log_hash.hex()
    signature = key.sign(checkpoint_message(STREAM, upto, h))
    cp = LogCheckpointed(node_id="forger", stream=STREAM, upto_seq=upto, log_hash=h,
                         key=key.public_hex, signature=signature)  # fmt: skip
    (cp_data,) = chained([ev.envelop(cp, key.id, ORIGIN)])
    envs.append(ev.decode(cp_data))
    data.append(cp_data)
    out = b"".join(
        json.dumps({"seq": n, "subject": e.subject, "data": d.decode()}).encode() + b"\n"
        for n, (e, d) in enumerate(zip(envs, data, strict=True), 1)
    )
    (export / "log.jsonl").write_bytes(out)
    for old in (export / "keys").iterdir():
        old.unlink()
    (export / "keys" / f"{key.id}.pub").write_text(key.public_hex + "\n")
    manifest = json.loads((export / "MANIFEST.json").read_text())
    manifest.update(log_sha256=sha256_hex(out), last_seq=len(data), messages=len(data))
    (export / "MANIFEST.json").write_text(json.dumps(manifest))


def test_a_forged_export_signed_with_a_key_of_its_own_is_caught_with_the_auditors_keys(
    work: Work, tmp_path: Path
) -> None:
    export = _copy(work.export, tmp_path)
    _forge(export, SigningKey(SigningKey.new_seed()))
    # Consistent in itself: only the keys it carries vouch for it.
    code, report, _ = offline(export, "--trust-export-keys")
    assert code == 0, whats(report)
    code, report, _ = offline(export, "--keys", _keys(work))
    assert code == 1
    assert any("which is not trusted" in line for line in whats(report)), whats(report)
    assert any("covered by no checkpoint" in line for line in whats(report)) or (
        report["vouched_upto"] == 0
    )


def test_events_no_checkpoint_covers_are_reported_past_a_limit(work: Work, tmp_path: Path) -> None:
    export = _copy(work.export, tmp_path)
    lines = (export / "log.jsonl").read_text().splitlines()
    kept = [json.loads(line) for line in lines if "LogCheckpointed" not in line]
    for n, line in enumerate(kept, 1):
        line["seq"] = n  # renumbered, so no gap shows
    out = "".join(json.dumps(line) + "\n" for line in kept).encode()
    (export / "log.jsonl").write_bytes(out)
    manifest = json.loads((export / "MANIFEST.json").read_text())
    manifest.update(log_sha256=sha256_hex(out), last_seq=len(kept))
    (export / "MANIFEST.json").write_text(json.dumps(manifest))
    code, report, _ = offline(export, "--keys", _keys(work))
    assert code == 0 and report["unvouched"] == len(kept)  # a short log: a note
    assert any("not covered by a checkpoint" in n for n in report["notes"]), report["notes"]
    code, report, _ = offline(export, "--keys", _keys(work), "--max-unvouched", "5")
    assert code == 1
    assert any("covered by no checkpoint" in line for line in whats(report)), whats(report)


def test_verify_of_a_folder_that_is_no_export_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDEDO_")}
    res = subprocess.run(
        [sys.executable, "-m", "claudedo_actors", "audit", "verify", "--export", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode != 0
    assert "not an export" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --- the timeline --------------------------------------------------------------------------


def test_the_timeline_shows_runs_with_cost_and_outcome_commits_and_the_review(
    work: Work,
) -> None:
    task = work.tasks[0]
    assert work.runner.node.cli("worktree", "merge", task).code == 0
    shown = work.runner.node.cli("audit", task)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    run = work.runner.task(task)["runs"][0]
    finished = next(line for line in lines if "run 1 succeeded" in line)
    assert f"${run['cost_usd']:.4f}" in finished and f"{run['turn_count']} turns" in finished
    commit = work.runner.task(task)["worktree"]["head_commit"]
    assert any(f"run 1 committed {commit[:10]}" in line for line in lines), lines
    merged = work.runner.task(task)["worktree"]["merge_commit"]
    assert any(f"merged into main as {merged[:10]}" in line for line in lines), lines
    assert lines[-1].startswith("1 run (1 succeeded), $")
    assert lines[-1].endswith(", 1 commit, done, merged into main")
    # --json stays the events, in order.
    events = work.runner.node.ok("audit", task)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[-1]["type"] == "WorktreeMerged"
