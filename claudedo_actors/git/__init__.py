"""Git for tasks: one runner for every git command, worktrees, merge, review."""
