"""Git work for tasks: a worktree per task, commits of the agent's changes, merge and discard.

Every commit ClaudeDo makes is authored and committed by ClaudeDo, with hooks and signing off,
so it never depends on the user's git config. Merge computes the merge commit without touching
any working tree, then moves the base branch only if it still points where it was read; when the
base branch is checked out, its working tree is fast-forwarded by git itself, which refuses
rather than overwrite local changes. Discard keeps the agent's commits under a ref of its own
per discard (`refs/claudedo/kept/<task>/<n>`), never overwritten; a task that runs again after
its folder or worktree went away starts from its branch, or from the work its discard kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from claudedo_actors.git.runner import GitError, git, git_ok, run_git
from events.errors import Conflict

# Kept refs live below `kept/`, so `claudedo/<task>` names only the task's branch: a ref
# `refs/claudedo/<task>` made it ambiguous to git (refs/<name> and refs/heads/<name>).
KEPT_REF_PREFIX = "refs/claudedo/kept/"

# git refuses concurrent `worktree add` on one repository (it locks shared files and fails
# rather than waits): the slots of a node take turns per repository, and so do the nodes of
# one machine (a file lock in the repository's git dir).
_REPO_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
_LOCK_FILE = "claudedo-worktrees.lock"


@contextlib.contextmanager
def repo_lock(repo: str) -> Iterator[None]:
    real = str(Path(repo).resolve())
    with _LOCKS_LOCK:
        lock = _REPO_LOCKS.setdefault(real, threading.Lock())
    with lock:
        path = _common_dir(real) / _LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only git dir: git itself will say what is wrong
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the other node's git, never fails
            yield
        finally:
            os.close(fd)


def _common_dir(repo: str) -> Path:
    """The repository's shared git dir: its `.git` folder, else what git says (a linked
    worktree, a bare repository). Read from the files first: a dispatch waits for it."""
    plain = Path(repo, ".git")
    if plain.is_dir():
        return plain
    return Path(repo, git(repo, "rev-parse", "--git-common-dir").strip())


def branch_for(task_id: str) -> str:
    """The task's own branch: `claudedo/<task id without dashes>`."""
    return f"claudedo/{task_id.replace('-', '')}"


def kept_refs_of(repo: str, task_id: str) -> list[tuple[str, str]]:
    """(ref, commit) of every discard of the task kept in `repo`, oldest first."""
    prefix = f"{KEPT_REF_PREFIX}{task_id.replace('-', '')}/"
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    refs = [tuple(line.split()) for line in out.splitlines() if line.strip()]
    return sorted(((r, c) for r, c in refs), key=lambda rc: int(rc[0].rsplit("/", 1)[1]))


def keep(repo: str, task_id: str, commit: str) -> str:
    """A new kept ref pointing at `commit`, numbered after the task's earlier ones; an
    existing ref is never moved (git creates it only if it does not exist yet)."""
    taken = kept_refs_of(repo, task_id)
    number = int(taken[-1][0].rsplit("/", 1)[1]) + 1 if taken else 1
    for _ in range(100):
        ref = f"{KEPT_REF_PREFIX}{task_id.replace('-', '')}/{number}"
        if git_ok(repo, "update-ref", "-m", "claudedo discard", ref, commit, ""):
            return ref
        number += 1
    raise GitError(f"could not keep the work of task {task_id[:8]} under a new ref")


@dataclass(frozen=True)
class NewWorktree:
    path: str
    branch: str
    base_branch: str | None
    base_commit: str


def toplevel(path: str) -> str:
    """The top folder of the work tree `path` is in (a list's dir may be a sub-folder)."""
    if Path(path, ".git").is_dir():
        return str(Path(path).resolve())  # the common case, without a git process
    return str(Path(git(path, "rev-parse", "--show-toplevel").strip()).resolve())


def branch_exists(repo: str, branch: str) -> bool:
    return git_ok(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


def _branch_from_files(repo: str, branch: str) -> bool | None:
    """Whether the branch exists, read from a plain `.git` folder's loose and packed refs;
    None when the files cannot tell (reftable, a linked worktree, unreadable files)."""
    gitdir = Path(repo, ".git")
    if not gitdir.is_dir() or (gitdir / "reftable").exists():
        return None
    try:
        if (gitdir / "refs" / "heads" / branch).exists():
            return True
        packed = (gitdir / "packed-refs").read_text()
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):
        return None
    return f" refs/heads/{branch}\n" in packed


def create_worktree(
    repo: str,
    path: Path,
    task_id: str,
    restore: str | None = None,
    base: tuple[str, str | None] | None = None,
) -> NewWorktree:
    """A worktree at `path` on the task's branch. When the branch exists (its folder was
    deleted), it is checked out again with its commits; else it is made at `restore` (the
    commit a discard kept) or at the repository's current HEAD. `base`: the (commit, branch)
    the task's work was first made from, kept when the branch or the kept work is reused."""
    branch = branch_for(task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if restore is None and _branch_from_files(repo, branch) is False:
        # A task's first worktree (the common case): one git process before the agent starts.
        # Should git refuse (a stale registration of the folder, another process's lock),
        # the careful way below prunes and retries.
        base_commit, base_branch = repo_head(repo)
        try:
            with repo_lock(repo):
                git(repo, "worktree", "add", "--quiet", "-b", branch, str(path), base_commit)
            return NewWorktree(str(path), branch, base_branch or None, base_commit)
        except GitError:
            if branch_exists(repo, branch):
                raise
    with repo_lock(repo):
        git(repo, "worktree", "prune")  # forget worktrees whose folders are gone
        reuse = branch_exists(repo, branch)
    if reuse or restore is not None:
        if base is None:
            raise GitError(f"the base of task {task_id[:8]}'s earlier work is not recorded")
        base_commit, base_branch = base[0], base[1] or ""
    else:
        base_commit, base_branch = repo_head(repo)
    start = ["-b", branch, str(path), restore or base_commit] if not reuse else [str(path), branch]
    for attempt in range(5):
        try:
            with repo_lock(repo):
                git(repo, "worktree", "add", "--quiet", *start)
            break
        except GitError as exc:
            # Another process (a second node on this machine) held one of git's locks.
            if "lock" not in str(exc) or attempt == 4:
                raise
            git(repo, "worktree", "prune", check=False)
            time.sleep(0.05 * (attempt + 1))  # backoff before trying git again
    return NewWorktree(str(path), branch, base_branch or None, base_commit)


def repo_head(repo: str) -> tuple[str, str]:
    """The commit HEAD points at and its branch name ("" when detached)."""
    known = _head_from_files(Path(repo) / ".git")
    if known is not None:
        return known
    # One call for both: the commit, then the branch name ("HEAD" when detached).
    commit, branch = git(repo, "rev-parse", "HEAD^{commit}", "--abbrev-ref", "HEAD").split()
    return commit, "" if branch == "HEAD" else branch


def _head_from_files(gitdir: Path) -> tuple[str, str] | None:
    """HEAD read from a plain `.git` folder: a branch with a loose ref, or a detached HEAD.

    A task's dispatch waits for this, and a git process costs more than the rest of the
    dispatch; anything else (packed or reftable refs, a linked worktree, a sub-folder, a
    symbolic ref outside refs/heads) returns None, and git is asked.
    """
    try:
        head = (gitdir / "HEAD").read_text().strip()
        if head.startswith("ref: refs/heads/"):
            ref = head.removeprefix("ref: ")
            commit, branch = (gitdir / ref).read_text().strip(), ref.removeprefix("refs/heads/")
        else:
            commit, branch = head, ""
    except (OSError, UnicodeDecodeError):
        return None
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        return None
    return commit, branch


def head_of(path: str) -> str:
    return git(path, "rev-parse", "--verify", "HEAD^{commit}").strip()


@dataclass(frozen=True)
class CommitStats:
    commit: str
    files_changed: int
    insertions: int
    deletions: int


def commit_changes(path: str, since: str, message: str) -> CommitStats | None:
    """Commit everything changed in the worktree; stats cover all commits after `since`.

    Returns None when nothing changed (no commit by the agent, nothing to commit).
    """
    # One call tells both where HEAD is and whether anything changed (the common "nothing").
    status = git(path, "status", "--porcelain=v2", "--branch", "--untracked-files=all")
    lines = status.splitlines()
    head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), since)
    if any(not ln.startswith("#") for ln in lines):
        git(path, "add", "--all")
        git(path, "commit", "--quiet", "--no-verify", "-m", message)
        head = head_of(path)
    if head == since:
        return None
    return CommitStats(head, *diff_stats(path, since, head))


def diff_stats(path: str, old: str, new: str) -> tuple[int, int, int]:
    """Files changed, insertions and deletions between two commits (binary files count 0)."""
    files = ins = dels = 0
    for line in git(path, "diff", "--numstat", old, new).splitlines():
        added, removed, _ = line.split("\t", 2)
        files += 1
        ins += int(added) if added.isdigit() else 0
        dels += int(removed) if removed.isdigit() else 0
    return files, ins, dels


def diff_text(repo: str, base_commit: str, head: str, stat: bool = False) -> str:
    args = ["diff", "--stat"] if stat else ["diff"]
    return git(repo, *args, base_commit, head)


def uncommitted(path: str) -> list[str]:
    """Paths with changes not committed in the worktree (porcelain lines)."""
    return [line for line in git(path, "status", "--porcelain").splitlines() if line]


def worktree_of(repo: str, branch: str) -> str | None:
    """The worktree of `repo` that has `branch` checked out, if any."""
    return _checked_out_at(repo, branch)


def _checked_out_at(repo: str, branch: str) -> str | None:
    """The worktree that has `branch` checked out, if any."""
    current: str | None = None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = line.removeprefix("worktree ")
        elif line == f"branch refs/heads/{branch}":
            return current
    return None


def merge_state(repo: str, branch: str, base_branch: str | None, base_commit: str) -> str:
    """What the task's branch holds that its base lacks: `empty` (no commit beyond the one it
    was made from), `merged` (every commit is in the base branch), `unmerged`, or `gone` (no
    such branch)."""
    tip = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    tip = tip.strip()
    if not tip:
        return "gone"
    if tip == base_commit:
        return "empty"
    if base_branch is not None:
        ref = f"refs/heads/{base_branch}"
        base = git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).strip()
        if base and git_ok(repo, "merge-base", "--is-ancestor", tip, base):
            return "merged"
    return "unmerged"


def merge_into_base(
    repo: str, branch: str, base_branch: str, base_commit: str, message: str
) -> str:
    """Merge `branch` into `base_branch`; returns the commit the base branch now points at.

    Everything is checked before anything moves: a missing or rewritten base branch, a
    conflict, or local changes in the base's working tree are errors that change nothing.
    """
    ref = f"refs/heads/{base_branch}"
    old = git(repo, "rev-parse", "--verify", "--quiet", ref, check=False).strip()
    if not old:
        raise Conflict(f"base branch {base_branch} no longer exists; nothing was merged")
    if not git_ok(repo, "merge-base", "--is-ancestor", base_commit, old):
        raise Conflict(
            f"base branch {base_branch} was rewritten since the worktree was made "
            f"(it no longer contains {base_commit[:10]}); nothing was merged"
        )
    tip = git(repo, "rev-parse", "--verify", f"refs/heads/{branch}").strip()
    if git_ok(repo, "merge-base", "--is-ancestor", tip, old):
        return old  # already merged
    tree = run_git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", old, tip)
    if tree.returncode == 1:
        files = ", ".join(tree.stdout.splitlines()[1:6])
        raise Conflict(f"merging into {base_branch} conflicts in {files}; nothing was merged")
    if tree.returncode != 0:
        raise GitError(f"git merge-tree failed: {' '.join(tree.stderr.split())[:300]}")
    merged_tree = tree.stdout.splitlines()[0].strip()
    merge = git(repo, "commit-tree", merged_tree, "-p", old, "-p", tip, "-m", message).strip()
    checkout = _checked_out_at(repo, base_branch)
    if checkout is None:
        # Nobody has the base checked out: move the ref, only if it did not move meanwhile.
        git(repo, "update-ref", "-m", "claudedo merge", ref, merge, old)
        return merge
    # The base is checked out (the user's own tree): a fast-forward to the merge commit lets
    # git refuse, changing nothing, if local changes would be overwritten.
    proc = run_git(checkout, "merge", "--ff-only", "--quiet", merge)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:300]
        raise Conflict(
            f"the merge would overwrite uncommitted changes in {checkout}: {detail}; "
            "nothing was merged"
        )
    return merge


def discard_worktree(
    repo: str, path: str, branch: str, task_id: str, message: str
) -> tuple[str | None, str | None]:
    """Remove the worktree and branch; the agent's commits stay under a ref of their own.

    Uncommitted changes are committed first, so nothing the agent wrote is lost. Returns the
    kept ref and the commit it points at (both None when the branch was already gone).
    """
    head: str | None = None
    # Only the repository's own worktree on the task's branch is touched, whatever path the
    # log names.
    registered = _checked_out_at(repo, branch)
    ours = registered is not None and Path(registered).resolve() == Path(path).resolve()
    if ours:
        if uncommitted(path):
            git(path, "add", "--all")
            git(path, "commit", "--quiet", "--no-verify", "-m", message)
        head = head_of(path)
    else:
        head = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
        head = head.strip() or None
    kept: str | None = None
    if head is not None:
        kept = keep(repo, task_id, head)
    elif taken := kept_refs_of(repo, task_id):
        kept, head = taken[-1]  # an earlier discard that stopped half-way kept it already
    with repo_lock(repo):
        if ours:
            git(repo, "worktree", "remove", "--force", path)
        git(repo, "worktree", "prune")
        if git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False):
            git(repo, "branch", "-D", "--quiet", branch)
    return kept, head
