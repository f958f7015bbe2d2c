"""The one way ClaudeDo runs git: a timeout, `LC_ALL=C`, no prompts, a neutral configuration.

Every git command of the node goes through `run_git`, so none of them can hang on a prompt or
a lock, parse translated messages, sign with the user's key or fire the user's hooks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from events.errors import ClaudeDoError

IDENTITY = {
    "GIT_AUTHOR_NAME": "ClaudeDo",
    "GIT_AUTHOR_EMAIL": "claudedo@localhost",
    "GIT_COMMITTER_NAME": "ClaudeDo",
    "GIT_COMMITTER_EMAIL": "claudedo@localhost",
}
# Settings that would make a commit depend on the user's configuration.
_NEUTRAL = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")
_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


class GitError(ClaudeDoError):
    """A git command failed or timed out; the message carries git's own words."""

    def __init__(self, message: str, code: str = "git") -> None:
        super().__init__(message, code=code)


def run_git(
    cwd: Path | str, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd` and return the finished process, whatever its exit code.

    Raises ClaudeDoError `no_git` when git is missing, GitError `git_timeout` past `timeout_s`
    (the child is killed), GitError when `cwd` does not exist.
    """
    env = {**os.environ, **IDENTITY, **_ENV}
    try:
        return subprocess.run(
            ["git", *_NEUTRAL, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise GitError(f"git {args[0]} failed: folder {cwd} does not exist") from None
        raise ClaudeDoError("git is not installed", code="no_git") from None
    except NotADirectoryError:
        raise GitError(f"git {args[0]} failed: {cwd} is not a folder") from None
    except subprocess.TimeoutExpired:
        raise GitError(
            f"git {args[0]} did not finish within {timeout_s:g} s", code="git_timeout"
        ) from None


def git(cwd: Path | str, *args: str, check: bool = True, timeout_s: float = 120) -> str:
    """Run git in `cwd` and return its stdout; with `check`, a failure raises GitError."""
    proc = run_git(cwd, *args, timeout_s=timeout_s)
    if check and proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())[:400]
        raise GitError(f"git {args[0]} failed: {detail or f'exit {proc.returncode}'}")
    return proc.stdout


def git_ok(cwd: Path | str, *args: str, timeout_s: float = 120) -> bool:
    """Whether git exits 0 (for the commands whose answer is their exit code)."""
    return run_git(cwd, *args, timeout_s=timeout_s).returncode == 0
