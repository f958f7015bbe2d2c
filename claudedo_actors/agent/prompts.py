"""The exact prompts of a run: the task's own, the automatic retry's, a fresh session's."""

from __future__ import annotations

from collections.abc import Sequence

from projections import SubtaskState


def task_prompt(title: str, description: str, subtasks: Sequence[SubtaskState]) -> str:
    """The reference prompt: title, the trimmed description, then the sub-task checklist."""
    prompt = title
    if description.strip():
        prompt += "\n\n" + description.strip()
    if subtasks:
        prompt += "\n\n## Sub-Tasks\n"
        prompt += "".join(f"- [{'x' if s.done else ' '}] {s.title}\n" for s in subtasks)
    return prompt


def retry_prompt(error: str) -> str:
    return f"The previous attempt failed with:\n\n{error}\n\nTry again and fix the issues."


def fresh_session_prompt(
    task_prompt: str, lost_result: str | None, lost_error: str | None, follow_up: str | None
) -> str:
    """A run that cannot resume the earlier session: the task again, what the lost run said,
    and the follow-up (a continue) or the retry's request."""
    prompt = task_prompt + "\n\n---\n"
    prompt += (
        "An earlier session on this task cannot be resumed. The working directory may already "
        "hold part of its work."
    )
    if lost_result:
        prompt += f"\n\nIts last result:\n\n{lost_result}"
    if lost_error:
        prompt += f"\n\nIts error:\n\n{lost_error}"
    if follow_up is not None:
        return prompt + f"\n\nNow:\n\n{follow_up}"
    return prompt + "\n\nTry again and finish the task."
