"""Roles on by default, tried from outside with plain nats-py: a plain `claudedo up` refuses
clients without credentials, and the server refuses each role what it may not do, while the
node keeps running (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from claudedo_actors.node.home import Home, NodeAddress
from claudedo_actors.node.roles import ROLES, accounts_block
from events.credentials import Credential, redact_url
from events.log import OUTPUT_STREAM, STREAM
from tests.conftest import NodeProcess, wait_until
from tests.runner_support import Runner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def roled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """One node with the embedded server (roles on, as for every user) and one slot."""
    runner = Runner(tmp_path_factory.mktemp("roles"), slots=1).start()
    yield runner
    runner.stop()


def _url(runner: Runner) -> str:
    address = NodeAddress.read(Home(runner.node.home))
    assert address is not None
    return address.nats_url


def _cred(runner: Runner, role: str) -> Credential:
    return Credential.read(runner.node.home / "creds" / f"{role}.json")


class Session:
    """A plain nats-py connection as one role, recording the errors the server sends."""

    def __init__(self, url: str, cred: Credential | None) -> None:
        self.url, self.cred = url, cred
        self.errors: list[str] = []
        self.nc: Any = None
        self._error = asyncio.Event()

    async def __aenter__(self) -> Session:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))
            self._error.set()

        login = self.cred.nats_options() if self.cred is not None else {}
        self.nc = await nats.connect(
            self.url, **login, error_cb=on_error, allow_reconnect=False, connect_timeout=3
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def refused(self, what: str) -> bool:
        """Whether the server sent a permissions violation naming `what`."""
        await self.nc.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0  # the -ERR comes with the flush's PONG at the latest
        while True:
            self._error.clear()  # before looking: an error arriving after it sets it again
            # nats-py passes the server's -ERR on in lower case
            if any(
                "permissions violation" in e.lower() and what.lower() in e.lower()
                for e in self.errors
            ):
                return True
            try:
                await asyncio.wait_for(self._error.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False


async def _stream_last(url: str, cred: Credential, stream: str = STREAM) -> int:
    async with Session(url, cred) as s:
        info = await s.nc.jetstream().stream_info(stream)
        return int(info.state.last_seq)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_home_credentials_and_node_file_are_private(roled: Runner) -> None:
    home = roled.node.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "creds").stat().st_mode) == 0o700
    for path in [home / "node.json", home / "nats" / "server.conf", *(home / "creds").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = (home / "nats" / "server.conf").read_text()
    for role in ROLES:
        assert _cred(roled, role).password not in config  # the server holds bcrypt hashes
    assert config.count('"$2a$') == len(ROLES)
    assert "sync_interval: always" in config  # every acknowledged event is on disk


def test_a_connection_without_credentials_is_refused(roled: Runner) -> None:
    url = _url(roled)

    async def attempt(cred: Credential | None) -> str:
        try:
            async with Session(url, cred):
                return "connected"
        except Exception as exc:
            return str(exc) or type(exc).__name__

    assert run(attempt(None)) != "connected"
    assert run(attempt(Credential("reader", "wrong-password"))) != "connected"
    assert run(attempt(Credential("nobody", "x"))) != "connected"
    assert run(attempt(_cred(roled, "reader"))) == "connected"


def _forged_list_event(name: str = "forged") -> tuple[str, bytes]:
    import events as ev
    from events._ids import new_aggregate_id

    origin = ev.Origin(node_id="mallory", correlation_id=new_aggregate_id(), actor="user:mallory")
    env = ev.envelop(ev.ListCreated(name=name, dir=None), new_aggregate_id(), origin)
    return env.subject, ev.encode(env)


@pytest.mark.parametrize("role", ["reader", "operator"])
def test_reader_and_operator_cannot_append_events(roled: Runner, role: str) -> None:
    url = _url(roled)
    subject, payload = _forged_list_event()
    before = run(_stream_last(url, _cred(roled, "node")))

    async def forge() -> bool:
        async with Session(url, _cred(roled, role)) as s:
            await s.nc.publish(subject, payload, headers={"Nats-Msg-Id": "forged-" + role})
            return await s.refused(subject)

    assert run(forge())
    assert run(_stream_last(url, _cred(roled, "node"))) == before
    assert all(item["name"] != "forged" for item in roled.ask("list.ls"))


def test_the_node_credential_is_what_appends(roled: Runner) -> None:
    """The one credential a forged event can come from: the node's (which the home keeps)."""
    url = _url(roled)
    subject, payload = _forged_list_event("appended-with-the-node-credential")

    async def append() -> Any:
        async with Session(url, _cred(roled, "node")) as s:
            return await s.nc.jetstream().publish(subject, payload)

    ack = run(append())
    assert ack.stream == STREAM


def test_reader_cannot_call_the_api(roled: Runner) -> None:
    url = _url(roled)

    async def call() -> tuple[bool, bool]:
        async with Session(url, _cred(roled, "reader")) as s:
            inbox = s.nc.new_inbox()
            sub = await s.nc.subscribe(inbox)
            body = json.dumps({"actor": "user:mallory", "name": "by-reader"}).encode()
            await s.nc.publish("claudedo.api.list.add", body, reply=inbox)
            refused = await s.refused("claudedo.api.list.add")
            try:
                await sub.next_msg(timeout=0.5)
                answered = True
            except nats.errors.TimeoutError:
                answered = False
            return refused, answered

    assert run(call()) == (True, False)
    assert all(item["name"] != "by-reader" for item in roled.ask("list.ls"))


@pytest.mark.parametrize(
    ("role", "api"),
    [
        ("operator", f"$JS.API.STREAM.DELETE.{STREAM}"),
        ("operator", f"$JS.API.STREAM.PURGE.{STREAM}"),
        ("reader", f"$JS.API.STREAM.DELETE.{STREAM}"),
        ("reader", f"$JS.API.STREAM.UPDATE.{STREAM}"),
        ("reader", "$JS.API.STREAM.CREATE.forged"),
        ("node", f"$JS.API.STREAM.PURGE.{STREAM}"),
        ("node", f"$JS.API.STREAM.DELETE.{STREAM}"),
        ("node", f"$JS.API.STREAM.MSG.DELETE.{STREAM}"),
        ("node", f"$JS.API.STREAM.UPDATE.{STREAM}"),
    ],
)
def test_no_role_may_remove_or_rewrite_the_log(roled: Runner, role: str, api: str) -> None:
    url = _url(roled)
    node = _cred(roled, "node")
    before = run(_stream_last(url, node))

    async def attempt() -> bool:
        async with Session(url, _cred(roled, role)) as s:
            body = json.dumps({"seq": 1, "name": STREAM, "subjects": ["x.>"]}).encode()
            with pytest.raises(nats.errors.TimeoutError):
                await s.nc.request(api, body, timeout=0.5)  # refused: nobody answers it
            return await s.refused(api)

    assert run(attempt())

    async def stream_state() -> tuple[int, int, list[str]]:
        async with Session(url, node) as s:
            info = await s.nc.jetstream().stream_info(STREAM)
            return int(info.state.first_seq), int(info.state.last_seq), list(info.config.subjects)

    first, last, subjects = run(stream_state())
    assert (first, last) == (1 if last else 0, before) and subjects == ["claudedo.evt.>"]


def test_a_reader_replays_and_follows_with_its_own_consumer(roled: Runner, git_repo: Path) -> None:
    """What the reader may do: replay the log from sequence 1, then see new events live."""
    url = _url(roled)
    roled.add_list(git_repo, name="replayed")

    async def replay_then_follow() -> tuple[list[str], str]:
        async with Session(url, _cred(roled, "reader")) as s:
            js = s.nc.jetstream()
            # A pull consumer of its own, with plain nats-py (decision 0022).
            config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30.0)
            sub = await js.pull_subscribe("claudedo.evt.>", stream=STREAM, config=config)
            last = await _stream_last(url, _cred(roled, "reader"))
            subjects: list[str] = []
            while len(subjects) < last:
                subjects += [m.subject for m in await sub.fetch(100, timeout=10)]
            task_id = await asyncio.to_thread(roled.add_task, "seen live", "replayed")
            while True:
                for msg in await sub.fetch(100, timeout=30):
                    if task_id in msg.subject:
                        return subjects, msg.subject

    subjects, live = run(replay_then_follow())
    assert subjects and subjects[0].startswith("claudedo.evt.")
    assert live.endswith(".TaskCreated")


def test_a_reader_cannot_subscribe_to_event_subjects_nor_redeliver_onto_them(
    roled: Runner, git_repo: Path
) -> None:
    """A push consumer delivers to any subject its creator names. Were a reader able to
    subscribe to an event subject, that interest would let the server deliver another
    stream's messages there, into the log. Readers subscribe to their inboxes alone."""
    url = _url(roled)
    roled.add_list(git_repo, name="redelivered")
    roled.wait_status(roled.add_task("say hello [fake:success]", "redelivered"))
    reader, node = _cred(roled, "reader"), _cred(roled, "node")
    target = "claudedo.evt.list.01J00000000000000000000000.ListCreated"

    async def attempt() -> bool:
        async with Session(url, reader) as s:
            await s.nc.subscribe(target)
            refused = await s.refused(target)
            config = {"deliver_subject": target, "deliver_policy": "all", "ack_policy": "none"}
            await s.nc.request(
                f"$JS.API.CONSUMER.CREATE.{OUTPUT_STREAM}",
                json.dumps({"stream_name": OUTPUT_STREAM, "config": config}).encode(),
                timeout=5,
            )
            return refused

    async def on_target() -> int:
        async with Session(url, node) as s:
            info = await s.nc.jetstream().stream_info(STREAM, subjects_filter=target)
            return len(info.state.subjects or {})

    async def output_lines() -> int:
        return await _stream_last(url, node, OUTPUT_STREAM)

    assert run(output_lines()) > 0  # there is something a consumer could deliver
    assert run(attempt())
    # Nothing was delivered onto the event subject (the node keeps appending its own events).
    assert run(on_target()) == 0


def test_the_operator_calls_the_api_and_reads_output(roled: Runner, git_repo: Path) -> None:
    roled.add_list(git_repo, name="operated")
    task_id = roled.add_task("write it [fake:write]", "operated")
    roled.wait_status(task_id)
    res = roled.node.cli("log", task_id[:8])
    assert res.code == 0 and '"type":"result"' in res.out.replace(" ", "")
    # Following a run's output reads both streams through the operator's own consumers.
    from claudedo_actors.agent.follow import follow_output

    lines: list[bytes] = []
    ended = run(follow_output(_url(roled), task_id, 1, lines.append, 10, _cred(roled, "operator")))
    assert ended and lines and b'"type":"result"' in lines[-1].replace(b" ", b"")


def test_the_node_runs_on_after_every_refusal(roled: Runner) -> None:
    info = roled.ask("info")
    assert info["nats_connected"] and info["nats_user"] == "node"
    assert "@" not in info["nats_url"]


def test_creds_writes_a_private_copy_that_logs_in(roled: Runner, tmp_path: Path) -> None:
    out = tmp_path / "reader.json"
    res = roled.node.cli("creds", "reader", "--out", str(out))
    assert res.code == 0, res.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    cred = Credential.read(out)
    assert cred.password not in res.out + res.err
    assert run(_stream_last(_url(roled), cred)) >= 0
    again = roled.node.cli("creds", "reader", "--out", str(out))
    assert again.code != 0 and "exists already" in again.err
    shown = roled.node.cli("creds", "operator")
    assert shown.code == 0 and _cred(roled, "operator").password not in shown.out
    bad = roled.node.cli("creds", "admin")
    assert bad.code != 0 and "Traceback" not in bad.err


def test_no_secret_in_events_logs_projection_outputs_or_agent_env(
    roled: Runner, git_repo: Path
) -> None:
    roled.add_list(git_repo, name="secrets")
    task_id = roled.add_task("look around [fake:success]", "secrets")
    roled.wait_status(task_id)
    secrets = [_cred(roled, role).password for role in ROLES]
    home = roled.node.home
    outputs = [
        roled.node.cli(*args)
        for args in (["info"], ["info", "--json"], ["tasks", "--json"], ["audit", task_id])
    ]
    texts = [r.out + r.err for r in outputs]
    texts.append(roled.node.log_path.read_text())
    texts.append((home / "node.json").read_text())
    texts.append((home / "nats" / "nats-server.log").read_text(errors="replace"))
    texts += [p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file()]
    texts.append((home / "projection.duckdb").read_bytes().decode("latin-1"))
    calls = roled.agent_calls()
    assert calls
    for call in calls:
        env = call["env"]
        assert not [k for k in env if k.startswith(("CLAUDEDO_NATS", "NATS_"))]
        texts.append(json.dumps(env))
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_the_agent_env_loses_nats_settings_given_to_the_node(tmp_path: Path) -> None:
    from claudedo_actors.node.node import agent_environment

    env = agent_environment(
        {
            "PATH": "/bin",
            "CLAUDEDO_NATS_CREDS": "/x",
            "NATS_URL": "nats://u:p@h",
            "HOME": "/h",
            "CLAUDEDO_NODE_CREDS": "/y",
            "CLAUDEDO_READER_PASSWORD": "pw",
        }
    )
    assert env == {"PATH": "/bin", "HOME": "/h"}


def test_urls_are_shown_without_their_userinfo() -> None:
    assert redact_url("nats://alice:s3cret@host:4222") == "nats://host:4222"
    assert redact_url("nats://tok3n@host:4222,tls://b:pw@h2") == "nats://host:4222,tls://h2"
    assert redact_url("nats://host:4222") == "nats://host:4222"
    assert "s3cret" not in repr(Credential("alice", "s3cret"))


def test_a_bad_credentials_file_is_one_clear_line(tmp_path: Path, nats_url: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        res = subprocess.run(
            [sys.executable, "-m", "claudedo_actors", "up", "--home", str(tmp_path / "h"),
             "--nats", nats_url, "--creds", str(path), "--slots", "0"],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("CLAUDEDO_")},
        )  # fmt: skip
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert str(path) in res.stderr and "{not json" not in res.stderr


# --- ops/nats/auth.conf, end to end -------------------------------------------------------


def test_auth_conf_is_the_roles_the_embedded_server_gets() -> None:
    text = (ROOT / "ops" / "nats" / "auth.conf").read_text()
    users = {role: f"CLAUDEDO_{role.upper()}_PASSWORD" for role in ROLES}
    assert text.endswith(accounts_block(users, variables=True))


@pytest.fixture
def shared_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, Credential]]]:
    """nats-server started with ops/nats/auth.conf as the docs say: the passwords in its
    environment, each party given a credentials file."""
    from claudedo_actors.node.embedded_nats import find_nats_server, free_port

    port = free_port()
    creds = {role: Credential(role, os.urandom(16).hex(), role) for role in ROLES}
    conf = tmp_path / "server.conf"
    # One more operator, added as docs/operations.md says: a user in the clients' account.
    auth = (ROOT / "ops" / "nats" / "auth.conf").read_text()
    reader_line = next(line for line in auth.splitlines() if "{user: reader," in line)
    alice = reader_line.replace("reader", "alice").replace("READER", "OPERATOR")
    alice = alice.replace("CLAUDEDO_OPERATOR_PASSWORD", "CLAUDEDO_ALICE_PASSWORD")
    (tmp_path / "auth.conf").write_text(auth.replace(reader_line, f"{reader_line}\n{alice}"))
    creds["alice"] = Credential("alice", os.urandom(16).hex(), "operator")
    conf.write_text(
        f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{tmp_path / "store"}" }}\n'
        "include auth.conf\n"
    )
    env = {**os.environ, **{f"CLAUDEDO_{n.upper()}_PASSWORD": c.password for n, c in creds.items()}}
    log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 - the child's for its life
    proc = subprocess.Popen(
        [find_nats_server(), "-c", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"nats://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with Session(url, creds["reader"]):
                return True
        except Exception:
            return False

    wait_until(lambda: run(up()), 20, "the shared server")
    yield url, creds
    proc.terminate()
    proc.wait(10)
    log.close()


def test_a_node_on_a_server_configured_with_auth_conf(
    shared_server: tuple[str, dict[str, Credential]], tmp_path: Path, git_repo: Path
) -> None:
    url, creds = shared_server
    files = {}
    for role, cred in creds.items():
        files[role] = tmp_path / f"{role}.json"
        cred.write(files[role])
    home = tmp_path / "home"
    # Without its credentials the node is refused, in one line naming no secret.
    refused = NodeProcess(home, ["--nats", url])
    res = refused.cli("up", "--nats", url, "--slots", "0")
    assert res.code != 0 and "refused" in res.err and "Traceback" not in res.err
    node = NodeProcess(home, ["--nats", url, "--creds", str(files["node"])]).start()
    try:
        node.extra_env["CLAUDEDO_NATS_CREDS"] = str(files["operator"])
        made = node.ok("list", "add", "shared", "--dir", str(git_repo))
        assert made["name"] == "shared"
        info = node.ok("info")
        assert info["nats_user"] == "node"
        # Another operator's CLI takes its replies on the operators' inboxes too.
        node.extra_env["CLAUDEDO_NATS_CREDS"] = str(files["alice"])
        assert [r["name"] for r in node.ok("list", "ls")] == ["shared"]
        node.extra_env["CLAUDEDO_NATS_CREDS"] = str(files["reader"])
        as_reader = node.cli("list", "add", "nope", "--dir", str(git_repo))
        assert as_reader.code != 0 and "refused" in as_reader.err
        assert "Traceback" not in as_reader.err
        assert run(_stream_last(url, creds["reader"])) >= 1
    finally:
        node.stop()


def test_a_password_in_the_nats_url_is_used_and_never_shown(
    shared_server: tuple[str, dict[str, Credential]], tmp_path: Path
) -> None:
    url, creds = shared_server
    secret = creds["node"].password
    with_login = url.replace("://", f"://node:{secret}@", 1)
    home = tmp_path / "home"
    wrong = NodeProcess(home).cli("up", "--nats", url.replace("://", "://node:nope@", 1))
    assert wrong.code != 0 and "refused" in wrong.err and "nope" not in wrong.err
    node = NodeProcess(home, ["--nats", with_login]).start()
    try:
        node.extra_env["CLAUDEDO_NATS_CREDS"] = str(tmp_path / "operator.json")
        creds["operator"].write(tmp_path / "operator.json")
        info = node.ok("info")
        assert info["nats_url"] == url and info["nats_user"] == "node"
        shown = node.cli("info")
        assert secret not in shown.out + shown.err
    finally:
        node.stop()
    assert secret not in node.log_path.read_text()


def test_the_node_answers_only_on_inboxes(roled: Runner) -> None:
    """The node replies with its own rights, and the server does not check a reply subject
    against the asker's: a reply on an event subject would have the node append for the
    operator. Requests with such a reply, or none, are not acted on."""
    url = _url(roled)
    target = "claudedo.evt.list.01j00000000000000000000001.ListCreated"
    node = _cred(roled, "node")

    async def on_target() -> int:
        async with Session(url, node) as s:
            info = await s.nc.jetstream().stream_info(STREAM, subjects_filter=target)
            return len(info.state.subjects or {})

    async def ask() -> None:
        async with Session(url, _cred(roled, "operator")) as s:
            await s.nc.publish("claudedo.api.info", b"{}", reply=target)
            body = json.dumps({"actor": "user:mallory", "name": "no-reply"}).encode()
            await s.nc.publish("claudedo.api.list.add", body)
            await s.nc.flush()

    run(ask())
    roled.ask("info")  # the node answers an honest request after them
    assert run(on_target()) == 0
    assert all(item["name"] != "no-reply" for item in roled.ask("list.ls"))


def test_a_password_with_any_characters_is_never_shown() -> None:
    from claudedo_actors.node.node import check_nats_url
    from events.errors import ClaudeDoError

    assert redact_url("nats://u:pa/ss?w#rd@host:4222") == "nats://host:4222"
    assert redact_url("u:p@h:1") == "h:1"
    with pytest.raises(ClaudeDoError) as refused:
        check_nats_url("nats://node:s3cr/et@host:42x2")
    assert "s3cr" not in str(refused.value) and "host" in str(refused.value)


def test_the_clis_credentials_do_not_become_the_nodes(roled: Runner, tmp_path: Path) -> None:
    """CLAUDEDO_NATS_CREDS is the CLI's: exported in a shell, it neither stops a plain
    `claudedo up` nor makes a node log in as the operator."""
    operator = tmp_path / "operator.json"
    _cred(roled, "operator").write(operator)
    home = tmp_path / "other"
    node = NodeProcess(home, env={"CLAUDEDO_NATS_CREDS": str(operator)}).start()
    try:
        node.extra_env.pop("CLAUDEDO_NATS_CREDS")  # the CLI of this home: its own operator
        assert node.ok("info")["nats_user"] == "node"
    finally:
        node.stop()
    wrong = NodeProcess(tmp_path / "third").cli(
        "up", "--nats", _url(roled), "--creds", str(operator), "--slots", "0"
    )
    assert wrong.code != 0 and "operator" in wrong.err and "Traceback" not in wrong.err


def test_no_answer_to_a_client_lands_in_the_log_whatever_its_reply_subject(
    roled: Runner, git_repo: Path
) -> None:
    """The server does not check a request's reply subject against the asker's permissions.
    Operators and readers are in an account of their own (decision 0022): every answer to
    them, the JetStream API's and the node's, goes back into that account, where no stream
    stores, even when the reply subject they name is an event subject."""
    url = _url(roled)
    lst = roled.add_list(git_repo, name="injected")
    before = roled.ask("list.ls")
    subject = f"claudedo.evt.list.{lst}.ListCreated"
    get = json.dumps({"last_by_subj": subject}).encode()
    consumer = {"stream_name": STREAM, "config": {"ack_policy": "none", "deliver_policy": "all"}}
    requests = [
        ("$JS.API.INFO", b""),
        (f"$JS.API.STREAM.INFO.{STREAM}", b""),
        (f"$JS.API.DIRECT.GET.{STREAM}", get),
        (f"$JS.API.DIRECT.GET.{STREAM}", json.dumps({"seq": 1, "batch": 50}).encode()),
        (f"$JS.API.STREAM.MSG.GET.{STREAM}", json.dumps({"seq": 1}).encode()),
        (f"$JS.API.CONSUMER.CREATE.{STREAM}", json.dumps(consumer).encode()),
    ]

    async def inject(role: str) -> None:
        async with Session(url, _cred(roled, role)) as s:
            for api, body in requests:
                await s.nc.publish(api, body, reply=subject)
            made = json.loads((await s.nc.request(requests[-1][0], requests[-1][1])).data)
            pull = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{made['name']}"
            await s.nc.publish(pull, json.dumps({"batch": 50, "no_wait": True}).encode(), subject)
            if role == "operator":
                await s.nc.publish("claudedo.api.info", b"{}", reply=subject)
            # Each asked again with an inbox: answered, so the server has handled the above.
            for api, body in requests:
                assert (await s.nc.request(api, body, timeout=10)).data is not None
            # A pull is answered too (a message keeps its own subject, so not by `request`).
            inbox = s.nc.new_inbox()
            answers = await s.nc.subscribe(inbox)
            await s.nc.publish(pull, json.dumps({"batch": 1, "expires": 10**9}).encode(), inbox)
            await answers.next_msg(timeout=10)
            assert not s.errors  # each of them was allowed

    last = run(_stream_last(url, _cred(roled, "node")))
    for role in ("reader", "operator"):
        run(inject(role))
    roled.ask("info")  # the node answered an honest request after them
    assert run(_stream_last(url, _cred(roled, "node"))) == last
    assert roled.ask("list.ls") == before
    skipped = roled.ask("sql", query="select count(*) as n from skipped_messages")
    assert skipped["rows"] == [[0]]
