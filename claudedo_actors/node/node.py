"""The node: embedded NATS (or a given server), supervisor, projector, feed and API."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pykka

import events as ev
from claudedo_actors.agent.process import kill_node_processes
from claudedo_actors.api.handlers import Api
from claudedo_actors.node.bridge import NatsBridge
from claudedo_actors.node.checkpointer import Checkpointer, env_number
from claudedo_actors.node.embedded_nats import EmbeddedNats, adopt_global_account, kill_stale
from claudedo_actors.node.home import Home, NodeAddress
from claudedo_actors.node.log_facade import LogFacade
from claudedo_actors.node.presence import Presence, beat_interval
from claudedo_actors.node.projector_actor import ProjectionFeed, ProjectorActor
from claudedo_actors.node.roles import NODES_ACCOUNT, ROLES, HomeCredentials
from claudedo_actors.node.supervisor import Supervisor
from claudedo_actors.runner.messages import (
    NodesChanged,
    ProjectionAdvanced,
    ResumeDispatch,
    SlotFree,
    SlotReplaced,
    TaskQueuedSeen,
)
from claudedo_actors.runner.queue import QueueActor
from claudedo_actors.runner.recovery import end_lost_review
from claudedo_actors.runner.slot import RunnerContext, SlotActor
from claudedo_actors.runner.spool import Spool, replay
from claudedo_actors.web.server import DEFAULT_WEB, WebServer
from events.credentials import NODE_CREDS_ENV, Credential, redact_url, url_user
from events.errors import ClaudeDoError
from events.log import STREAM
from events.replay import replay_batches
from projections import queries as q
from projections.snapshots import DEFAULT_EVERY, Snapshots
from projections.store import FORMAT_VERSION, drop_if_out_of_date

log = logging.getLogger("claudedo.node")
REPLICAS_ENV = "CLAUDEDO_REPLICAS"


def check_nats_url(url: str) -> None:
    """A NATS URL a client can dial: nats://, tls://, ws:// or wss:// with a host. Errors
    quote the URL without its user and password."""
    for one in url.split(","):
        parsed = urlparse(one.strip() if "://" in one else f"nats://{one.strip()}")
        shown = redact_url(one.strip())
        if parsed.scheme not in ("nats", "tls", "ws", "wss") or not parsed.hostname:
            raise ClaudeDoError(f"{shown!r} is not a NATS URL (nats://host:port)", "invalid")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ClaudeDoError(f"{shown!r} has a bad port", code="invalid") from None


class NodeLock:
    """An exclusive lock on the home folder; the kernel drops it when the process dies."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        self.home.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ClaudeDoError(
                f"a node is already running on home {self.home.root} (pid {holder})",
                code="node_running",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Node:
    """One ClaudeDo node. `run` blocks until SIGINT/SIGTERM (or `request_stop`)."""

    def __init__(
        self,
        home: Path,
        nats_url: str | None = None,
        slots: int = 2,
        claude_bin: str | None = None,
        replicas: int | None = None,
        creds: str | os.PathLike[str] | None = None,
        web: str | None = DEFAULT_WEB,
    ) -> None:
        """`replicas`: how many servers keep the streams when this node creates them
        (default: CLAUDEDO_REPLICAS, else min(3, the NATS cluster's size)). `creds`: the
        node's credentials file for a given NATS server (default: CLAUDEDO_NODE_CREDS, else
        the home's own, else none); the embedded server always uses the home's."""
        if slots < 0:
            raise ClaudeDoError("--slots must not be negative", code="invalid")
        if replicas is None and os.environ.get(REPLICAS_ENV):
            try:
                replicas = int(os.environ[REPLICAS_ENV])
            except ValueError:
                replicas = 0
        if replicas is not None and not 1 <= replicas <= 5:
            raise ClaudeDoError(f"{REPLICAS_ENV} must be 1 to 5 (replicas)", code="invalid")
        self.replicas = replicas
        self.home = Home(home)
        self.nats_url = nats_url  # shown and stored: never with a user or password in it
        self._connect_url = nats_url
        self._url = ""
        self._creds_file = creds or os.environ.get(NODE_CREDS_ENV) or None
        self._credential: Credential | None = None
        self.slots = slots
        self.claude_bin = claude_bin
        self.on_ready: list[Callable[[], None]] = []  # called once the node is up
        self._web_address = web  # None: no board
        self._web: WebServer | None = None
        try:
            self.beat_s = beat_interval()
        except ValueError as exc:
            raise ClaudeDoError(str(exc), code="invalid") from None
        self.node_id = ""
        self._stop = threading.Event()
        self._stop_reason = ""
        self._lock = NodeLock(self.home)
        self._nats: EmbeddedNats | None = None
        self._bridge: NatsBridge | None = None
        self._supervisor: pykka.ActorRef[Any] | None = None
        self._projector: pykka.ActorRef[Any] | None = None
        self._feed: ProjectionFeed | None = None
        self._checkpointer: Checkpointer | None = None
        self._api: Api | None = None
        self._facade: LogFacade | None = None
        self._presence: Presence | None = None
        self._queue: pykka.ActorRef[Any] | None = None
        self._slots: list[pykka.ActorRef[Any]] = []

    def request_stop(self, reason: str = "") -> None:
        self._stop_reason = reason
        self._stop.set()

    def run(self) -> int:
        """Start, serve until told to stop, stop cleanly. Returns the exit code."""
        starting = True

        def on_signal(signum: int, frame: object) -> None:
            self.request_stop()
            if starting:  # abort a start that waits (e.g. on an unreachable NATS server)
                raise ClaudeDoError("interrupted while starting", code="interrupted")

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            starting = False
            self._stop.wait()
        finally:
            starting = False  # a second signal must not interrupt the clean-up
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._stop_reason:
            log.error("node stopped: %s", self._stop_reason)
            return 1
        return 0

    def start(self) -> None:
        if self.nats_url is not None:
            check_nats_url(self.nats_url)
            self.nats_url = redact_url(self.nats_url)
        # The projector builds small Arrow tables for every batch, for the node's whole life.
        # Arrow's default pool kept the freed memory, and the node's RSS grew with every
        # finished task (about 100 MiB over 10,000); with the C library's allocator it stays
        # flat (docs/benchmarks.md, "Node memory").
        pa.set_memory_pool(pa.system_memory_pool())
        self._lock.acquire()
        widened = self.home.protect()
        if widened is not None:
            log.warning(
                "home %s was mode %o: now 0700 (it holds credentials)", self.home.root, widened
            )
        self.node_id = self.home.node_id()
        url = self._connect_url
        credentials = HomeCredentials(self.home.creds_dir)
        if url is None:
            # Roles on by default: the server knows a user per role, the node logs in as its
            # own, the CLI as the operator (docs/security.md).
            self._credential = credentials.get("node")
            for role in ROLES:
                credentials.get(role)
            # Every write fsynced before it is acknowledged (docs/operations.md measures it).
            config = credentials.server_config() + "jetstream { sync_interval: always }\n"
            self.home.write_private(self.home.nats_config_file, config)
            kill_stale(self.home.nats_pid_file, self.home.nats_dir)
            if adopt_global_account(self.home.nats_dir, NODES_ACCOUNT):
                log.info("the log moved into the nodes' own NATS account %s", NODES_ACCOUNT)
            self._nats = EmbeddedNats(
                self.home.nats_dir, self.home.nats_pid_file, self.node_id,
                config=self.home.nats_config_file,
            )  # fmt: skip
            url = self._nats.start()
            self._nats.watch()
            log.info("embedded nats-server on %s (store %s)", url, self.home.nats_dir)
        elif self._creds_file is not None:
            self._credential = Credential.read(self._creds_file)
            if self._credential.role not in ("", "node"):
                raise ClaudeDoError(
                    f"{self._creds_file} holds the {self._credential.role}'s credentials; "
                    "a node logs in with a node's",
                    code="invalid",
                )
        elif url_user(url) is None:  # a login in the URL is the one to use
            self._credential = credentials.existing("node")
        self.nats_url = redact_url(url)
        self._url = url  # with its login, for the node's own further connections
        bridge = self._bridge = NatsBridge()
        try:
            bridge.start(url, name=f"claudedo-node-{self.node_id}", credential=self._credential)
        except ClaudeDoError:
            raise
        except Exception as exc:
            reason = _connect_failure(exc)
            raise ClaudeDoError(
                f"cannot connect to NATS at {self.nats_url}: {reason}", code="no_nats"
            ) from None
        assert bridge.log is not None and bridge.nc is not None
        bridge.call(bridge.log.ensure_stream(self.replicas))

        old_format = drop_if_out_of_date(self.home.projection_file)
        if old_format is not None:
            log.warning(
                "projection format %d is out of date (now %d): building it again from the log",
                old_format, FORMAT_VERSION,
            )  # fmt: skip
        self._snapshots = _snapshots(self.home.root)
        self._supervisor = Supervisor.start(on_give_up=self.request_stop)
        supervisor = self._supervisor.proxy()
        self._projector = supervisor.start_child(
            "projector",
            lambda: ProjectorActor.start(
                self.home.projection_file,
                self._snapshots,
                (self._snapshots.folder, self.home.root / "as-of"),
            ),
        ).get()
        self._read_log = functools.partial(replay_batches, url, STREAM, credential=self._credential)
        self._feed = ProjectionFeed(
            bridge.log,
            self._projector_proxy,
            self._projector_failed,
            self._read_log,
            self.home.root / "projection.build.duckdb",
        )
        bridge.call(self._feed.start())
        self._api = Api(
            bridge.nc,
            bridge.log,
            self._feed,
            self.node_id,
            self.info,
            self.home.root / "projection.rebuild.duckdb",
            self._swap,
            self._read_log,
            self._snapshots,
            self.home.root / "as-of",
        )
        bridge.call(self._api.start())
        killed = kill_node_processes(self.node_id)
        if killed:
            log.warning("killed %d process(es) left by runs of an earlier life", killed)
        self._start_runner(bridge)
        self._start_checkpointer()
        self._start_web(bridge)
        for ready in self.on_ready:  # before the address: a client that finds it sees them
            ready()
        NodeAddress(self.node_id, self.nats_url, os.getpid()).write(self.home)
        log.info(
            "node %s ready: home %s, nats %s, slots %d, projection at %d",
            self.node_id,
            self.home.root,
            self.nats_url,
            self.slots,
            self._feed.checkpoint,
        )

    def _start_runner(self, bridge: NatsBridge) -> None:
        """Slots, then the queue; the queue starts once the projection holds the whole log."""
        assert self._supervisor is not None and self._feed is not None
        facade = self._facade = LogFacade(bridge)
        try:  # before anything is settled: the spooled outcome of a run is the truth
            replay(Spool(self.home.spool_dir), facade)
        except Exception as exc:
            log.error("spooled appends not appended yet (kept for the next start): %s", exc)
        facade.start_output()
        assert bridge.nc is not None
        presence = self._presence = Presence(
            bridge.nc, self.node_id, self.slots, self._nodes_changed, self.beat_s
        )
        bridge.call(presence.start(), timeout_s=30)
        bridge.on_reconnected.append(self._nats_back)
        supervisor = self._supervisor.proxy()
        ctx = RunnerContext(
            node_id=self.node_id,
            home=self.home,
            facade=facade,
            claude_bin=self.claude_bin,
            env=agent_environment(os.environ),
            on_free=self._slot_free,
            on_crash=self._slot_crashed,
        )
        for number in range(self.slots):
            self._slots.append(
                supervisor.start_child(
                    f"slot-{number}", functools.partial(SlotActor.start, number, ctx)
                ).get()
            )
        self._queue = supervisor.start_child(
            "queue",
            lambda: QueueActor.start(
                self.node_id,
                facade,
                self._projector_proxy,
                self._slots,
                self._queue_crashed,
                presence,
            ),
        ).get()
        bridge.call(self._feed.wait_for(facade.last_seq(), timeout_s=600))
        assert self._api is not None
        bridge.call(self._api.while_no_review(functools.partial(self._end_own_reviews, facade)))
        self._feed.listeners.append(self._projection_advanced)
        if self.slots:
            facade.watch(ev.event_subject("task", "*", "TaskQueued"), self._task_queued)
        self._queue.tell(ResumeDispatch())

    def _start_checkpointer(self) -> None:
        """Signed checkpoints of the log (node/checkpointer.py), from the projection's pace."""
        assert self._feed is not None and self._facade is not None
        facade, read_log = self._facade, self._read_log
        checkpointer = self._checkpointer = Checkpointer(
            self.node_id,
            STREAM,
            self.home.signing_key(),
            lambda first, last: read_log(first, last),
            lambda envelopes, expected: facade.append(envelopes, expected),
            self.home.checkpoint_file,
        )
        self._feed.listeners.append(checkpointer.advanced)
        checkpointer.advanced(self._feed.checkpoint)
        checkpointer.start()

    def _nats_back(self) -> None:
        """NATS is reachable again: the queue looks for work it could not claim meanwhile."""
        if self._queue is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._queue.tell(ResumeDispatch())

    def _end_own_reviews(self, facade: LogFacade) -> None:
        """Merges and discards an earlier life of this node began and never ended."""
        node_id = self.node_id
        ids = self._projector_proxy().run(lambda p: q.reviews_held_by(p, node_id)).get()
        for task_id in ids:
            end_lost_review(facade, task_id, node_id, node_id)

    def _task_queued(self, subject: str, seq: int) -> None:
        parsed = ev.parse_event_subject(subject)
        if parsed is not None and self._queue is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._queue.tell(TaskQueuedSeen(parsed[1], seq))

    def _nodes_changed(self) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            if self._queue is not None:
                self._queue.tell(NodesChanged())

    def _projection_advanced(self, checkpoint: int) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            if self._queue is not None:
                self._queue.tell(ProjectionAdvanced(checkpoint))

    def _queue_crashed(self, reason: str) -> None:
        assert self._supervisor is not None
        ref = self._supervisor.proxy().child_failed("queue", reason).get()
        if ref is not None:
            self._queue = ref
            ref.tell(ResumeDispatch())

    def _slot_free(self, number: int) -> None:
        if self._queue is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._queue.tell(SlotFree(number))

    def _slot_crashed(self, number: int, reason: str) -> None:
        assert self._supervisor is not None
        ref = self._supervisor.proxy().child_failed(f"slot-{number}", reason).get()
        if ref is not None:
            self._slots[number] = ref
            if self._queue is not None:
                self._queue.tell(SlotReplaced(number, ref))

    def _start_web(self, bridge: NatsBridge) -> None:
        """The board over HTTP (`--web`, default a free loopback port; `--no-web`: none).
        Its login link goes to the terminal of `claudedo up`, never into the node's log."""
        if self._web_address is None:
            return
        import getpass
        import socket
        import sys

        assert self._api is not None
        api = self._api
        actor = f"user:{getpass.getuser()}@{socket.gethostname()}"
        from claudedo_actors.agent.follow import follow_output

        follow = functools.partial(follow_output, self._url, credential=self._credential)
        self._web = WebServer(
            self._web_address, self.home.web_token(), actor, bridge.submit, api.call,
            logs_dir=self.home.logs_dir, follow=follow,
        )  # fmt: skip
        port_file = self.home.root / "web-port"  # the port of the last life, tried first
        last_port: int | None = None
        with contextlib.suppress(OSError, ValueError):
            last_port = int(port_file.read_text().strip())
        url = self._web.start(last_port)
        with contextlib.suppress(OSError):
            port_file.write_text(f"{self._web.port_bound}\n")
        assert self._feed is not None
        self._web.advanced(self._feed.checkpoint)
        self._feed.listeners.append(self._web.advanced)
        log.info("board on %s (claudedo open, or the login link printed at start)", url)
        sys.stdout.write(f"board: {url}/login?token={self.home.web_token()}\n")
        sys.stdout.flush()

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "nats_url": self.nats_url,
            "nats_user": self._nats_user(),
            "stream": STREAM,
            "signing_key": self._checkpointer.key.id if self._checkpointer else None,
            "web_url": self._web.url if self._web is not None else None,
            "slots": self.slots,
            "home": str(self.home.root),
            "pid": os.getpid(),
            "nodes": self._presence.nodes() if self._presence is not None else [],
            **self._nats_health(),
        }

    def _nats_user(self) -> str | None:
        """Who the node logs in as: its credential's user, or the user in the given URL."""
        if self._credential is not None:
            return self._credential.user
        return url_user(self._connect_url or "")

    def _nats_health(self) -> dict[str, Any]:
        """Whether the node reaches NATS (it starts no runs while it does not)."""
        bridge, since = self._bridge, None
        if bridge is not None and bridge.disconnected_since is not None:
            since = round(time.time() - bridge.disconnected_since, 1)
        return {
            "nats_connected": bridge is not None and bridge.connected,
            "nats_unreachable_for_s": since,
            "nats_restarts": self._nats.restarts if self._nats is not None else 0,
        }

    def _projector_proxy(self) -> Any:
        assert self._projector is not None
        return self._projector.proxy()

    def _projector_failed(self, reason: str) -> bool:
        """The feed saw the projector fail: True when it was restarted."""
        assert self._supervisor is not None
        ref = self._supervisor.proxy().child_failed("projector", reason).get()
        if ref is None:
            return False
        self._projector = ref
        return True

    async def _swap(self, path: Path) -> int:
        loop = asyncio.get_running_loop()
        checkpoint: int = await loop.run_in_executor(
            None, lambda: self._projector_proxy().swap(path, self._read_log).get()
        )
        return checkpoint

    def stop(self) -> None:
        if self._facade is not None:
            self._facade.closing = True
        bridge = self._bridge
        if bridge is not None:
            if self._api is not None:
                _quietly(lambda: bridge.call(self._api.stop(), timeout_s=5))
            if self._feed is not None:
                _quietly(lambda: bridge.call(self._feed.stop(), timeout_s=5))
        if self._checkpointer is not None:
            _quietly(self._checkpointer.stop)
        if self._web is not None:
            _quietly(self._web.stop)
        # No new claims first; then every slot ends its run and gives its task back, at once.
        if self._queue is not None:
            _quietly(lambda: self._queue.stop(block=True, timeout=30))
        stopping = [ref.stop(block=False) for ref in self._slots if ref.is_alive()]
        for future in stopping:
            _quietly(lambda future=future: future.get(timeout=60))
        if self._facade is not None:
            _quietly(self._facade.stop_output)
        if bridge is not None and self._presence is not None:
            # After the slots gave their tasks back: the other nodes may take them at once.
            _quietly(lambda: bridge.call(self._presence.stop(), timeout_s=5))
        if self._supervisor is not None:
            _quietly(lambda: self._supervisor.stop(block=True, timeout=30))
        if bridge is not None:
            _quietly(bridge.stop)
        if self._nats is not None:
            _quietly(self._nats.stop)
        if self.node_id:
            self.home.node_file.unlink(missing_ok=True)
            log.info("node %s stopped", self.node_id)
        self._lock.release()


def agent_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The node's environment for its agents, without what lets a process log in to NATS
    (ClaudeDo's credentials file, the nats CLI's settings, a URL with a password)."""
    out = {}
    for key, value in environ.items():
        if key.startswith(("CLAUDEDO_NATS", "CLAUDEDO_NODE_CREDS", "NATS_")):
            continue
        if key.startswith("CLAUDEDO_") and key.endswith("_PASSWORD"):
            continue  # the roles' passwords a shared server's auth.conf reads
        out[key] = value
    return out


def _connect_failure(exc: BaseException) -> str:
    """Why the connection failed, in words that name no secret."""
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower():
        return "the server refused the credentials (authorization violation)"
    return text


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:
        log.exception("while stopping")


def _snapshots(root: Path) -> Snapshots:
    """The home's projection snapshots (`CLAUDEDO_SNAPSHOT_EVERY` events apart); snapshots
    of other projection formats and states built for past questions are removed."""
    import shutil

    every = int(env_number("CLAUDEDO_SNAPSHOT_EVERY", DEFAULT_EVERY)) or DEFAULT_EVERY
    snapshots = Snapshots(root / "snapshots", every)
    if snapshots.folder.parent.is_dir():
        for other in snapshots.folder.parent.iterdir():
            if other != snapshots.folder:
                shutil.rmtree(other, ignore_errors=True)
    shutil.rmtree(root / "as-of", ignore_errors=True)
    snapshots.folder.mkdir(parents=True, exist_ok=True)
    (root / "as-of").mkdir(exist_ok=True)
    return snapshots
