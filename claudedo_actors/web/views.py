"""What the board's pages show, made ready for their templates: a diff split per file and
highlighted, a run's transcript as readable entries, a task's timeline. Pure functions."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from claudedo_actors.agent.transcript import Entry, entries
from projections.timeline import Timeline

# Past this many lines a file's diff is shown without colours (highlighting is the slow part).
HIGHLIGHT_MAX_LINES = 5000


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add, del, hunk, meta, context
    marker: str
    html: str  # the line's text, escaped and, where its language is known, highlighted


@dataclass(frozen=True)
class DiffFile:
    path: str
    lines: list[DiffLine]
    added: int
    removed: int


def diff_files(diff: str) -> list[DiffFile]:
    """A unified diff per file, each hunk's code highlighted in the file's language."""
    files: list[DiffFile] = []
    for part in diff.split("\ndiff --git "):
        if not part.strip():
            continue
        text = part if part.startswith("diff --git ") else "diff --git " + part
        first = text.split("\n", 1)[0]
        path = first.rsplit(" b/", 1)[-1] if " b/" in first else first
        files.append(_file(path, text.splitlines()))
    return files


def _file(path: str, lines: list[str]) -> DiffFile:
    lexer = _lexer(path) if len(lines) <= HIGHLIGHT_MAX_LINES else None
    out: list[DiffLine] = []
    added = removed = 0
    in_hunk = False
    hunk: list[tuple[str, str, str]] = []  # (kind, marker, code) of the hunk's lines

    def flush() -> None:
        shown_lines = _highlight([code for *_, code in hunk], lexer)
        for (kind, marker, _), shown in zip(hunk, shown_lines, strict=True):
            out.append(DiffLine(kind, marker, shown))
        hunk.clear()

    for line in lines:
        if line.startswith("@@"):
            flush()
            in_hunk = True
            out.append(DiffLine("hunk", "", html.escape(line)))
        elif in_hunk and line[:1] in ("+", "-", " "):
            kind = {"+": "add", "-": "del"}.get(line[:1], "context")
            added += kind == "add"
            removed += kind == "del"
            hunk.append((kind, line[:1], line[1:]))
        else:  # a file's header, or "\\ No newline at end of file" (the hunk goes on)
            flush()
            in_hunk = in_hunk and line.startswith("\\")
            out.append(DiffLine("meta", "", html.escape(line)))
    flush()
    return DiffFile(path, out, added, removed)


def _lexer(path: str) -> Any:
    from pygments.lexers import get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _highlight(code: list[str], lexer: Any) -> list[str]:
    """Each line highlighted, the hunk lexed as one text so strings and comments that span
    lines keep their colour; escaped text where the language is not known."""
    if not code:
        return []
    if lexer is None:
        return [html.escape(c) for c in code]
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    shown = highlight("\n".join(code) + "\n", lexer, HtmlFormatter(nowrap=True)).split("\n")
    if len(shown) < len(code):  # not expected; never lose a line for a colour
        return [html.escape(c) for c in code]
    return shown[: len(code)]


def highlight_css() -> str:
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(style="default").get_style_defs(".diff"))  # type: ignore[no-untyped-call]


def transcript(lines: Iterable[bytes]) -> list[Entry]:
    """A run's lines as readable entries, in order."""
    return [entry for line in lines for entry in entries(line)]


def timeline(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """A task's events, each with what it changed in words, and the task's totals."""
    line = Timeline()
    shown = [{**row, "what": line.what(row)} for row in rows]
    return shown, line.totals.line()
