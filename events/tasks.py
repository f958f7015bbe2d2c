"""Events of the task aggregate: the task, its sub-tasks, queueing, claims, runs, worktrees."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from events._base import Amount, BigCount, Count, Positive, Seconds, Signed, TaskEvent


class Subtask(msgspec.Struct, frozen=True, kw_only=True):
    """A checklist item as created with its task."""

    subtask_id: str
    title: str


# --- the task itself -------------------------------------------------------------------------


class TaskCreated(TaskEvent, frozen=True, kw_only=True):
    """A task was written into a list, as a draft. Agent settings here override the list's."""

    # v1 carried `subtasks` as a list of titles; v2 gives each sub-task a stable id.
    SCHEMA_VERSION: ClassVar[int] = 2

    list_id: str
    title: str
    description: str = ""
    subtasks: tuple[Subtask, ...] = ()
    model: str | None = None
    system_prompt: str | None = None
    agent_path: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    max_budget_usd: Amount | None = None
    max_turns: Positive | None = None
    timeout_s: Seconds | None = None


class TaskEdited(TaskEvent, frozen=True, kw_only=True):
    """Some fields of a task changed. Absent fields are unchanged; null clears a setting."""

    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    model: str | UnsetType | None = UNSET
    system_prompt: str | UnsetType | None = UNSET
    agent_path: str | UnsetType | None = UNSET
    permission_mode: str | UnsetType | None = UNSET
    allowed_tools: tuple[str, ...] | UnsetType | None = UNSET
    max_budget_usd: Amount | UnsetType | None = UNSET
    max_turns: Positive | UnsetType | None = UNSET
    timeout_s: Seconds | UnsetType | None = UNSET


class SubtaskAdded(TaskEvent, frozen=True, kw_only=True):
    """A checklist item was appended to the task."""

    subtask_id: str
    title: str


class SubtaskCompleted(TaskEvent, frozen=True, kw_only=True):
    """A checklist item was ticked."""

    subtask_id: str


class SubtaskReopened(TaskEvent, frozen=True, kw_only=True):
    """A ticked checklist item was unticked."""

    subtask_id: str


# --- queueing and claims ---------------------------------------------------------------------


class TaskQueued(TaskEvent, frozen=True, kw_only=True):
    """The task waits for a free slot. `follow_up_prompt` is set when it continues a session."""

    follow_up_prompt: str | None = None


class TaskUnqueued(TaskEvent, frozen=True, kw_only=True):
    """A queued task was taken back to draft before any slot claimed it."""


class TaskClaimed(TaskEvent, frozen=True, kw_only=True):
    """A slot of a node took the task; no other slot may run it."""

    node_id: str
    slot: Count


class TaskStarted(TaskEvent, frozen=True, kw_only=True):
    """The claiming slot began working on the task in `workdir`."""

    node_id: str
    slot: Count
    workdir: str


class TaskRequeued(TaskEvent, frozen=True, kw_only=True):
    """A claimed or running task went back to the queue (its node stopped or was lost)."""

    reason: str


class TaskCompleted(TaskEvent, frozen=True, kw_only=True):
    """The task is done; `result` is the agent's final answer."""

    result: str | None = None


class TaskFailed(TaskEvent, frozen=True, kw_only=True):
    """The task failed. `cause` is one of the documented causes (docs/events.md)."""

    error: str
    cause: str


class TaskCancelRequested(TaskEvent, frozen=True, kw_only=True):
    """A user asked to cancel a claimed or running task; its slot stops the run."""

    reason: str = "cancelled by user"


class TaskCancelled(TaskEvent, frozen=True, kw_only=True):
    """The task was cancelled; no process of it is left."""

    reason: str = "cancelled by user"


class TaskArchived(TaskEvent, frozen=True, kw_only=True):
    """The user put the task away: `tasks` and the board leave it out unless asked
    (`--archived`). Nothing of it changed, and `task unarchive` brings it back."""


class TaskUnarchived(TaskEvent, frozen=True, kw_only=True):
    """An archived task was brought back into `tasks` and the board."""


class TaskDeleted(TaskEvent, frozen=True, kw_only=True):
    """The user deleted the task: it takes no more commands and is shown only with
    `--archived`; its events, runs and git work stay. `forced`: the user overrode a refusal,
    which `overrode` names (a run under way, unmerged commits)."""

    forced: bool = False
    overrode: str | None = None


# --- working directories ---------------------------------------------------------------------


class WorktreeCreated(TaskEvent, frozen=True, kw_only=True):
    """A git worktree on a branch of the task's own was made from the list's HEAD."""

    path: str
    branch: str
    base_branch: str | None
    base_commit: str
    # The repository the worktree belongs to (its real path); review uses it, not the list's
    # dir of the moment. None in events written before it was recorded.
    repo: str | None = None


class SandboxCreated(TaskEvent, frozen=True, kw_only=True):
    """The task runs in a plain folder (its list has no git dir)."""

    path: str


class WorktreeCommitted(TaskEvent, frozen=True, kw_only=True):
    """The agent's changes of a run were committed on the task's branch."""

    run_number: Positive
    commit: str
    files_changed: Count
    insertions: Count
    deletions: Count


class WorktreeMerged(TaskEvent, frozen=True, kw_only=True):
    """The task's branch was merged into the base branch it was made from."""

    into_branch: str
    merge_commit: str


class WorktreeDiscarded(TaskEvent, frozen=True, kw_only=True):
    """The worktree and branch were removed; `kept_ref` still reaches the agent's commits."""

    kept_ref: str | None
    head_commit: str | None


class ReviewStarted(TaskEvent, frozen=True, kw_only=True):
    """A merge or discard of the task's worktree began on `node_id`. Until WorktreeMerged,
    WorktreeDiscarded or ReviewEnded, the task cannot be queued, continued or reviewed again."""

    action: str  # "merge" or "discard"
    node_id: str


class ReviewEnded(TaskEvent, frozen=True, kw_only=True):
    """A merge or discard ended without changing the worktree (git refused, or the node
    doing it stopped); `error` says why."""

    action: str
    error: str


# --- runs ------------------------------------------------------------------------------------


class RunStarted(TaskEvent, frozen=True, kw_only=True):
    """Run N of the task began (run 1, the automatic retry, or a continue)."""

    run_number: Positive
    is_retry: bool = False
    is_continue: bool = False
    node_id: str
    slot: Count
    workdir: str
    prompt: str
    model: str | None = None
    resume_session_id: str | None = None
    log_path: str | None = None


class RunProcessSpawned(TaskEvent, frozen=True, kw_only=True):
    """The agent process of a run exists; enough to find it again after a crash."""

    run_number: Positive
    pid: Positive
    pid_started_at: Amount
    argv: tuple[str, ...]


class RunSessionOpened(TaskEvent, frozen=True, kw_only=True):
    """The agent announced its session (the stream-json `system`/`init` line)."""

    run_number: Positive
    session_id: str
    cli_version: str | None = None
    model: str | None = None
    permission_mode: str | None = None


class SessionLost(TaskEvent, frozen=True, kw_only=True):
    """The session of run N cannot be resumed (its node is gone, or the folder it ran in):
    the next run starts a fresh session, with that run's result and error in its prompt."""

    run_number: Positive
    session_id: str
    node_id: str
    reason: str


class PermissionDenial(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call the agent was not allowed to make."""

    tool_name: str
    tool_use_id: str | None = None
    tool_input: Any = None


class RunFinished(TaskEvent, frozen=True, kw_only=True):
    """Run N ended, successfully or not, with everything the agent reported."""

    run_number: Positive
    success: bool
    exit_code: Signed | None = None
    cause: str | None = None
    result: str | None = None
    error: str | None = None
    structured_output: Any = None
    turn_count: Count | None = None
    tokens_in: BigCount | None = None
    tokens_out: BigCount | None = None
    cache_read_tokens: BigCount | None = None
    cache_creation_tokens: BigCount | None = None
    cost_usd: Amount | None = None
    duration_ms: BigCount | None = None
    api_error_status: Count | None = None
    line_count: BigCount = 0
    transcript_sha256: str | None = None
    # Why Claude Code stopped, as its result line says (2.1.328 on): `completed`,
    # `api_error`, `max_turns`, `budget_exhausted`, `aborted_tools`, `aborted_streaming`, ...
    terminal_reason: str | None = None
    # The tool calls the agent was refused (the result line's `permission_denials`).
    permission_denials: tuple[PermissionDenial, ...] = ()


TASK_EVENTS: tuple[type[TaskEvent], ...] = (
    TaskCreated,
    TaskEdited,
    SubtaskAdded,
    SubtaskCompleted,
    SubtaskReopened,
    TaskQueued,
    TaskUnqueued,
    TaskClaimed,
    TaskStarted,
    TaskRequeued,
    TaskCompleted,
    TaskFailed,
    TaskCancelRequested,
    TaskCancelled,
    TaskArchived,
    TaskUnarchived,
    TaskDeleted,
    WorktreeCreated,
    SandboxCreated,
    WorktreeCommitted,
    WorktreeMerged,
    WorktreeDiscarded,
    ReviewStarted,
    ReviewEnded,
    RunStarted,
    RunProcessSpawned,
    RunSessionOpened,
    SessionLost,
    RunFinished,
)
