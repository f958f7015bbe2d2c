"""User text as a terminal shows it: control characters escaped, never obeyed."""

from __future__ import annotations


def plain(text: str) -> str:
    """`text` with each control or otherwise unprintable character escaped (`\\x1b`), so an
    escape sequence in a title or an agent's output is printed, not run by the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
