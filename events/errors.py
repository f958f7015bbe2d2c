"""The one exception family: a stable code and a one-line message a user can act on."""

from __future__ import annotations


class ClaudeDoError(Exception):
    """An error the user can act on. `code` is stable; the message is one line."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class NotFound(ClaudeDoError):
    code = "not_found"


class Ambiguous(ClaudeDoError):
    code = "ambiguous"


class Invalid(ClaudeDoError):
    code = "invalid"


class Conflict(ClaudeDoError):
    code = "conflict"


class Unavailable(ClaudeDoError):
    code = "unavailable"
