"""What a run executes: the exact prompts, permission checks, agent files and command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from claudedo_actors.agent import command as ac
from claudedo_actors.agent import prompts
from events.errors import ClaudeDoError
from projections import SubtaskState


def _sub(title: str, done: bool, i: int) -> SubtaskState:
    return SubtaskState(task_id="t", subtask_id=f"s{i}", position=i, title=title, done=done)


def test_prompt_is_the_title_alone_without_description_or_subtasks() -> None:
    assert prompts.task_prompt("Fix it", "   \n", []) == "Fix it"


def test_prompt_adds_trimmed_description_and_checklist_ending_in_a_newline() -> None:
    subs = [_sub("one", True, 0), _sub("two", False, 1)]
    assert prompts.task_prompt("Fix it", "\n  Carefully. \n", subs) == (
        "Fix it\n\nCarefully.\n\n## Sub-Tasks\n- [x] one\n- [ ] two\n"
    )
    assert prompts.task_prompt("Fix it", "", subs[1:]) == "Fix it\n\n## Sub-Tasks\n- [ ] two\n"


def test_retry_prompt_is_the_references() -> None:
    assert prompts.retry_prompt("boom") == (
        "The previous attempt failed with:\n\nboom\n\nTry again and fix the issues."
    )


@pytest.mark.parametrize(
    ("env", "euid", "refused"),
    [({}, 0, True), ({"IS_SANDBOX": "1"}, 0, False), ({}, 1000, False)],
)
def test_bypass_permissions_as_root_needs_is_sandbox(
    env: dict[str, str], euid: int, refused: bool
) -> None:
    if refused:
        with pytest.raises(ClaudeDoError, match="IS_SANDBOX=1"):
            ac.check_permission_mode("bypassPermissions", env, euid)
    else:
        ac.check_permission_mode("bypassPermissions", env, euid)
    ac.check_permission_mode("acceptEdits", {}, 0)  # the default works as root


def test_agent_file_becomes_agents_json_and_its_name(tmp_path: Path) -> None:
    agent = tmp_path / "fallback-name.md"
    agent.write_text(
        "---\nname: reviewer\ndescription: 'Reviews code'\nmodel: opus\n---\n\nBe strict.\n"
    )
    name, definition = ac.agent_definition(str(agent))
    assert name == "reviewer"
    assert definition == {"description": "Reviews code", "prompt": "Be strict.", "model": "opus"}
    plain = tmp_path / "plain.md"
    plain.write_text("Just a prompt.\n")
    assert ac.agent_definition(str(plain)) == (
        "plain",
        {"description": "plain", "prompt": "Just a prompt."},
    )


def test_a_missing_agent_file_or_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClaudeDoError, match="cannot read agent file"):
        ac.agent_definition(str(tmp_path / "gone.md"))
    with pytest.raises(ClaudeDoError, match="--claude-bin"):
        ac.resolve_binary(str(tmp_path / "no-claude"))


def test_command_line_has_the_headless_stream_json_flags_and_resume() -> None:
    config = ac.AgentConfig(model="m", max_turns=3, max_budget_usd=1.5)
    argv = ac.build_argv("/bin/claude", config, "sess-1")
    assert argv[:5] == ["/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--resume") + 1] == "sess-1"
    assert argv[argv.index("--max-budget-usd") + 1] == "1.5"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert json.dumps(argv)  # plain strings only
