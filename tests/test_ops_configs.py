"""The NATS configurations shipped in ops/ are valid for the nats-server we ship."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from claudedo_actors.node.embedded_nats import find_nats_server

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "ops" / "nats").glob("*.conf"))


@pytest.mark.parametrize("conf", CONFIGS, ids=lambda p: p.name)
def test_nats_config_is_valid(conf: Path) -> None:
    # auth.conf takes the roles' passwords from the server's environment, as documented.
    env = {**os.environ, **{f"CLAUDEDO_{r}_PASSWORD": "x" for r in ("NODE", "OPERATOR", "READER")}}
    result = subprocess.run(
        [find_nats_server(), "-t", "-c", str(conf)],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_configs_are_there() -> None:
    assert {p.name for p in CONFIGS} >= {"single.conf", "cluster-node.conf", "auth.conf"}
