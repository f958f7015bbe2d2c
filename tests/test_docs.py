"""The documentation tells the truth about the catalog and the commands."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

import events as ev

ROOT = Path(__file__).resolve().parent.parent


def test_every_event_and_field_is_in_the_catalog_doc() -> None:
    doc = (ROOT / "docs" / "events.md").read_text()
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", doc, flags=re.S | re.M))
    assert set(sections) == {cls.__name__ for cls in ev.ALL_EVENTS}
    for cls in ev.ALL_EVENTS:
        documented = set(re.findall(r"^\| `(\w+)` \|", sections[cls.__name__], flags=re.M))
        assert documented == {f.name for f in msgspec.structs.fields(cls)}, cls.__name__
        assert f"schema version {cls.SCHEMA_VERSION}." in sections[cls.__name__]


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command.strip() in readme
