"""The packages depend one way: events <- projections <- claudedo_actors, and the rooms of
claudedo_actors without cycles. Every import counts, lazy and type-only ones included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("events", "projections", "claudedo_actors")
# What each top package may import of ours.
ALLOWED = {
    "events": set(),
    "projections": {"events"},
    "claudedo_actors": {"events", "projections"},
}


def _imports(path: Path) -> set[str]:
    """Every module name of ours that `path` imports, anywhere in it."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in TOP}


def _modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for top in TOP:
        for path in (ROOT / top).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[module.removesuffix(".__init__")] = _imports(path)
    return found


def _room(module: str) -> str | None:
    """The sub-package of claudedo_actors a module lives in (None for its top modules)."""
    parts = module.split(".")
    if parts[0] != "claudedo_actors" or len(parts) < 3:
        return None
    return parts[1]


def test_top_packages_point_one_way() -> None:
    wrong = [
        f"{module} imports {name}"
        for module, names in _modules().items()
        for name in names
        if (src := module.split(".")[0]) != (dst := name.split(".")[0]) and dst not in ALLOWED[src]
    ]
    assert wrong == []


def test_rooms_of_claudedo_actors_have_no_cycle() -> None:
    rooms = {"agent", "api", "audit", "cli", "git", "node", "runner", "web"}
    edges: dict[str, set[str]] = defaultdict(set)
    for module, names in _modules().items():
        src = _room(module)
        for name in names:
            dst = _room(name)
            if src and dst and src != dst:
                edges[src].add(dst)
    assert set(edges) | {d for ds in edges.values() for d in ds} <= rooms
    cycles: list[list[str]] = []

    def visit(room: str, path: list[str]) -> None:
        for nxt in sorted(edges[room]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            else:
                visit(nxt, [*path, nxt])

    for room in sorted(rooms):
        visit(room, [room])
    assert cycles == [], dict(edges)


def test_no_module_is_left_flat_in_claudedo_actors() -> None:
    flat = {p.name for p in (ROOT / "claudedo_actors").glob("*.py")}
    assert flat == {"__init__.py", "__main__.py"}


def test_git_runs_only_through_the_git_runner() -> None:
    """Merge, the list-dir check and every other git call share one runner (timeouts, LC_ALL=C,
    neutral config): no other module starts a process whose argv begins with "git"."""
    runner = ROOT / "claudedo_actors" / "git" / "runner.py"
    offenders = []
    for path in (ROOT / "claudedo_actors").rglob("*.py"):
        if path == runner:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.List | ast.Tuple)
                and node.elts
                and isinstance(node.elts[0], ast.Constant)
                and node.elts[0].value == "git"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
