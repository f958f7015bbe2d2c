"""The base a task's worktree is made from: the repository's HEAD, however git stores it."""

from __future__ import annotations

from pathlib import Path

import pytest

from claudedo_actors.git import worktrees as wt
from tests.runner_support import git_out


def _asked_git(repo: Path) -> tuple[str, str]:
    commit = git_out(repo, "rev-parse", "HEAD^{commit}")
    branch = git_out(repo, "rev-parse", "--abbrev-ref", "HEAD")
    return commit, "" if branch == "HEAD" else branch


def test_head_of_a_branch_with_a_loose_ref(git_repo: Path) -> None:
    assert wt.repo_head(str(git_repo)) == _asked_git(git_repo)
    assert wt.repo_head(str(git_repo))[1] == "main"


def test_head_of_a_branch_with_a_slash_and_a_packed_ref(git_repo: Path) -> None:
    git_out(git_repo, "checkout", "-q", "-b", "feature/x")
    git_out(git_repo, "pack-refs", "--all")  # no loose ref file is left
    assert not (git_repo / ".git" / "refs" / "heads" / "feature" / "x").exists()
    assert wt.repo_head(str(git_repo)) == (_asked_git(git_repo)[0], "feature/x")


def test_head_of_a_detached_head(git_repo: Path) -> None:
    git_out(git_repo, "checkout", "-q", "--detach")
    assert wt.repo_head(str(git_repo)) == (_asked_git(git_repo)[0], "")


def test_head_of_a_sub_folder_and_of_a_linked_worktree(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "sub").mkdir()
    assert wt.repo_head(str(git_repo / "sub")) == _asked_git(git_repo)
    linked = tmp_path / "linked"
    git_out(git_repo, "worktree", "add", "-q", "-b", "other", str(linked))
    assert wt.repo_head(str(linked)) == (_asked_git(git_repo)[0], "other")


def test_a_broken_head_is_asked_of_git_and_reported(git_repo: Path) -> None:
    (git_repo / ".git" / "refs" / "heads" / "main").write_text("not a commit\n")
    with pytest.raises(wt.GitError):
        wt.repo_head(str(git_repo))


def test_a_worktree_records_the_base_it_was_made_from(git_repo: Path, tmp_path: Path) -> None:
    made = wt.create_worktree(str(git_repo), tmp_path / "w" / "t1", "t-1")
    assert (made.branch, made.base_branch) == ("claudedo/t1", "main")
    assert made.base_commit == _asked_git(git_repo)[0]
    assert git_out(made.path, "rev-parse", "HEAD") == made.base_commit
