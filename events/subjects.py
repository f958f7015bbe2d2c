"""NATS subjects of events, agent output and the API."""

from __future__ import annotations

EVENTS_PREFIX = "claudedo.evt"
EVENTS_ALL = "claudedo.evt.>"
OUTPUT_ALL = "claudedo.out.>"
API_PREFIX = "claudedo.api"


def event_subject(aggregate: str, aggregate_id: str, event_name: str) -> str:
    """`claudedo.evt.<aggregate>.<id>.<EventName>`."""
    return f"{EVENTS_PREFIX}.{aggregate}.{aggregate_id}.{event_name}"


def aggregate_filter(aggregate: str, aggregate_id: str) -> str:
    """Every event subject of one aggregate instance."""
    return f"{EVENTS_PREFIX}.{aggregate}.{aggregate_id}.>"


def collection_filter(aggregate: str) -> str:
    """Every event subject of one aggregate kind (e.g. all lists)."""
    return f"{EVENTS_PREFIX}.{aggregate}.>"


def parse_event_subject(subject: str) -> tuple[str, str, str] | None:
    """(aggregate, id, EventName) of an event subject, or None when it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "claudedo" or parts[1] != "evt":
        return None
    return parts[2], parts[3], parts[4]


def output_subject(task_id: str, run_number: int) -> str:
    """`claudedo.out.<task>.<run>`: the live lines of one agent run."""
    return f"claudedo.out.{task_id}.{run_number}"


def api_subject(verb: str) -> str:
    """`claudedo.api.<verb>`, e.g. `claudedo.api.task.add`."""
    return f"{API_PREFIX}.{verb}"
