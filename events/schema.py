"""JSON Schema of the event envelope and every event, generated from the structs."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from events.catalog import ALL_EVENTS
from events.codec import Envelope

SCHEMA_DIR = Path(__file__).parent / "schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema: the envelope (with the union of all events) and one per event."""
    out: dict[str, dict[str, Any]] = {"Envelope.json": _cleaned(msgspec.json.schema(Envelope))}
    for cls in ALL_EVENTS:
        schema = _cleaned(msgspec.json.schema(cls))
        schema["x-aggregate"] = cls.AGGREGATE
        schema["x-schema-version"] = cls.SCHEMA_VERSION
        out[f"{cls.__name__}.json"] = schema
    return out


def _cleaned(node: Any) -> Any:
    """`node` with every description dedented as inspect.cleandoc does: msgspec 0.23 does it
    itself and earlier versions did not, so the files do not depend on the version."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _cleaned(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_cleaned(value) for value in node]
    return node


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file, removing files of events that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    paths = []
    for name, schema in wanted.items():
        path = directory / name
        path.write_text(render(schema))
        paths.append(path)
    return paths


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that differ from what the structs generate now."""
    wanted = schemas()
    present = {p.name for p in directory.glob("*.json")}
    out = [n for n in sorted(present | set(wanted)) if n not in present or n not in wanted]
    out += [
        n for n in sorted(present & set(wanted)) if (directory / n).read_text() != render(wanted[n])
    ]
    return out


def main() -> int:
    paths = write()
    print(f"wrote {len(paths)} schema files to {SCHEMA_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
