"""The examples of the event catalog (docs/events.md) are events: each decodes and validates."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import events as ev
from events.codec import decode

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "events.md"
SCHEMA_DIR = ROOT / "events" / "schema"


@dataclass(frozen=True)
class Example:
    """One ```json block of the doc that is an envelope, and the `### Event` section it is in."""

    line: int
    section: str | None
    text: str
    envelope: dict[str, Any]

    @property
    def event_type(self) -> str:
        return str(self.envelope["event"]["type"])


def read_examples(doc: str) -> list[Example]:
    """Every envelope (a JSON object whose `event` has a `type`) in a ```json block of `doc`."""
    found = []
    section: str | None = None
    for match in re.finditer(r"^(?:(#{2,3}) (\w+)[^\n]*|```json\n(.*?)^```)$", doc, re.M | re.S):
        line = doc.count("\n", 0, match.start()) + 1
        if match.group(1):
            section = match.group(2) if match.group(1) == "###" else None
            continue
        try:
            value = json.loads(match.group(3))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"docs/events.md line {line}: not JSON: {exc}") from None
        event = value.get("event") if isinstance(value, dict) else None
        if isinstance(event, dict) and "type" in event:
            found.append(Example(line, section, match.group(3), value))
    return found


EXAMPLES = read_examples(DOC.read_text())
BY_ID = {f"{e.event_type}-line{e.line}": e for e in EXAMPLES}


def test_every_event_type_has_an_example_in_its_section() -> None:
    shown = {e.section for e in EXAMPLES if e.section == e.event_type}
    assert [cls.__name__ for cls in ev.ALL_EVENTS if cls.__name__ not in shown] == []


def test_an_event_section_shows_only_its_own_type() -> None:
    names = {cls.__name__ for cls in ev.ALL_EVENTS}
    misplaced = [
        f"{e.event_type} at line {e.line}, in the section of {e.section}"
        for e in EXAMPLES
        if e.section in names and e.section != e.event_type
    ]
    assert misplaced == []


@pytest.mark.parametrize("name", BY_ID)
def test_example_decodes_to_its_type(name: str) -> None:
    example = BY_ID[name]
    envelope = decode(example.text.encode())
    assert envelope.event_type == example.event_type


@pytest.mark.parametrize("name", BY_ID)
def test_example_is_of_its_types_current_schema_version(name: str) -> None:
    example = BY_ID[name]
    assert (
        example.envelope["schema_version"] == ev.EVENTS_BY_NAME[example.event_type].SCHEMA_VERSION
    )


@pytest.mark.parametrize("name", BY_ID)
def test_example_event_validates_against_its_types_schema(name: str) -> None:
    example = BY_ID[name]
    assert _schema_errors(f"{example.event_type}.json", example.envelope["event"]) == []


@pytest.mark.parametrize("name", BY_ID)
def test_example_validates_against_the_envelope_schema(name: str) -> None:
    assert _schema_errors("Envelope.json", BY_ID[name].envelope) == []


def _schema_errors(schema_file: str, instance: Any) -> list[str]:
    """What `instance` breaks of a schema of events/schema/, validated as
    ops/examples/subscriber.py validates."""
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]
