"""A real NATS cluster on loopback for tests: n nats-server processes with JetStream, routed
to each other, each one startable and killable on its own (same ports and store each time)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import nats

from claudedo_actors.node.embedded_nats import find_nats_server, free_port
from claudedo_actors.node.roles import HomeCredentials
from tests.conftest import login_url, wait_until

CONFIG = """server_name: {name}
listen: 127.0.0.1:{client_port}
jetstream {{
  store_dir: "{store}"
}}
cluster {{
  name: claudedo-test
  listen: 127.0.0.1:{route_port}
  routes: [{routes}]
}}
{authorization}"""


class Cluster:
    """`creds`: each role's credentials; the servers enforce ClaudeDo's roles."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.folder = folder
        self.creds = folder / "creds"
        credentials = HomeCredentials(self.creds)
        authorization = credentials.server_config()
        self._node = credentials.get("node")
        self.size = size
        self.ports = [(free_port(), free_port()) for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _, r in self.ports)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (client, route) in enumerate(self.ports):
            (folder / f"s{i}.conf").write_text(
                CONFIG.format(
                    name=f"s{i}",
                    client_port=client,
                    route_port=route,
                    store=folder / f"store{i}",
                    routes=routes,
                    authorization=authorization,
                )
            )

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.ports[i][0]}"

    def login(self, i: int) -> str:
        """Server i's URL logged in as a node."""
        return login_url(self.url(i), self._node.user, self._node.password)

    def start(self, i: int) -> None:
        log = open(self.folder / f"s{i}.log", "ab")  # noqa: SIM115 - the child's for its life
        self.procs[i] = subprocess.Popen(
            [find_nats_server(), "-c", str(self.folder / f"s{i}.conf")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def start_all(self) -> Cluster:
        for i in range(self.size):
            self.start(i)
        wait_until(self._formed, 60, "the cluster to form and elect a JetStream leader")
        return self

    def _formed(self) -> bool:
        async def ask() -> bool:
            try:
                nc = await nats.connect(self.login(0), connect_timeout=1, max_reconnect_attempts=0)
            except Exception:
                return False
            try:
                if len(set(nc._server_info.get("connect_urls") or [])) < self.size:
                    return False
                await nc.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        return asyncio.run(ask())

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.procs[i] = None

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill(i)
