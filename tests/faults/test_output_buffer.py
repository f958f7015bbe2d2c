"""Live output goes through a bounded buffer: a slow or absent NATS never blocks the agent."""

from __future__ import annotations

import threading

import pytest

from claudedo_actors.node import log_facade
from claudedo_actors.node.bridge import NatsBridge
from claudedo_actors.node.log_facade import LogFacade


def test_live_output_past_the_buffer_is_dropped_not_waited_for(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_facade, "OUTPUT_BUFFER_BYTES", 1000)
    bridge = NatsBridge()
    bridge.start(nats_url, name="buffer-test")
    try:
        facade = LogFacade(bridge)
        facade.start_output()
        gate = threading.Event()
        # The loop is held up (as by a NATS that does not take writes): lines pile up.
        bridge.loop.call_soon_threadsafe(gate.wait, 30)
        for i in range(100):
            facade.publish(f"claudedo.out.buffer-test.{i}", b"x" * 100, {})
        gate.set()
        facade.stop_output()
        assert facade.output_dropped == 90  # 10 lines of 100 bytes fit in 1000
    finally:
        bridge.stop()
