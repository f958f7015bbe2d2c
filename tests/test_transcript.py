"""A run's lines as readers see them (`claudedo log`, the board), against the real Claude
Code transcripts of both versions, and the board's diff per file."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from claudedo_actors.agent.transcript import entries, plain
from claudedo_actors.web.views import diff_files

FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = sorted(FIXTURES.glob("claude-code-*/*.ndjson"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recorded_line_reads_as_what_it_is(path: Path) -> None:
    for raw in path.read_bytes().splitlines():
        line = json.loads(raw)
        got = entries(raw)
        assert all(plain(e) is not None for e in got)
        if line.get("type") == "result":
            (result,) = got
            assert result.kind == "result" and result.is_error == (line["is_error"] is not False)
        elif line.get("type") == "assistant":
            blocks = line["message"]["content"]
            tools = [b["name"] for b in blocks if b["type"] == "tool_use"]
            assert [e.title.split()[0] for e in got if e.kind == "tool"] == tools
            if line.get("is_api_error_message") or line.get("error"):
                assert got and all(e.kind == "error" for e in got if e.kind != "tool")
        elif line.get("type") == "user":
            failed = [b.get("is_error") is True for b in line["message"]["content"]
                      if isinstance(b, dict) and b.get("type") == "tool_result"]  # fmt: skip
            assert [e.is_error for e in got] == failed


def test_a_failed_run_says_why_and_an_api_retry_is_an_error() -> None:
    rows = (FIXTURES / "claude-code-2.1.328" / "e500.ndjson").read_bytes().splitlines()
    got = [e for raw in rows for e in entries(raw)]
    assert [e.title for e in got if e.kind == "error"][:2] == [
        "API retry 1/2 after HTTP 500", "API retry 2/2 after HTTP 500",
    ]  # fmt: skip
    assert got[-1].title.startswith("failed (api_error)")
    old = (FIXTURES / "claude-code-2.1.197" / "nologin.ndjson").read_bytes().splitlines()
    last = entries(old[-1])[-1]
    assert last.title.startswith("failed:") and "Not logged in" in last.body


def test_lines_that_are_not_stream_json_are_shown_as_they_are() -> None:
    assert entries(b"") == []
    (raw,) = entries(b"Traceback (most recent call last):")
    assert raw.kind == "raw" and raw.body == "Traceback (most recent call last):"
    (other,) = entries(b'{"type": "from_a_newer_cli", "payload": [1]}')
    assert other.kind == "raw" and other.title == "from_a_newer_cli"
    assert entries(b"[1, 2]")[0].kind == "raw"
    (said,) = entries(b'{"type": "assistant", "message": {"content": "x' + b"y" * 30_000 + b'"}}')
    assert said.kind == "said" and "more characters in the raw log" in said.body


DIFF = '''diff --git a/app.py b/app.py
index 1111111..2222222 100644
--- a/app.py
+++ b/app.py
@@ -1,3 +1,4 @@
 def greet(name):
-    return "hi " + name
+    """Say <hello>
+    to someone."""
+    return f"hello {name}"
\\ No newline at end of file
diff --git a/notes.unknownext b/notes.unknownext
new file mode 100644
--- /dev/null
+++ b/notes.unknownext
@@ -0,0 +1 @@
+plain <text> & more
'''


def test_a_diff_is_split_per_file_and_highlighted_without_losing_a_character() -> None:
    files = diff_files(DIFF)
    assert [(f.path, f.added, f.removed) for f in files] == [
        ("app.py", 3, 1), ("notes.unknownext", 1, 0),
    ]  # fmt: skip
    shown = [
        line.marker + html.unescape(re.sub(r"<[^>]+>", "", line.html))
        for f in files
        for line in f.lines
    ]
    assert shown == DIFF.splitlines()
    app = files[0]
    assert [line.kind for line in app.lines][4:] == ["hunk", "context", "del", "add", "add",
                                                     "add", "meta"]  # fmt: skip
    assert '<span class="k">def</span>' in app.lines[5].html  # Python, coloured
    # The docstring's second line keeps its string colour: the hunk is lexed as one text.
    assert app.lines[8].html.startswith('<span class="sd">')
    assert files[1].lines[-1].html == "plain &lt;text&gt; &amp; more"  # unknown: escaped only
