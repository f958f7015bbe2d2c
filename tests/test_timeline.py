"""The audit timeline's words for each event, from rows as the audit gives them."""

from __future__ import annotations

from typing import Any

import msgspec

import events as ev
from projections.timeline import Timeline


def _rows(*events: ev.Event) -> list[dict[str, Any]]:
    rows = []
    for seq, event in enumerate(events, 1):
        payload = msgspec.to_builtins(event)
        name = payload.pop("type")
        rows.append({"seq": seq, "type": name, "payload": payload})
    return rows


def _whats(*events: ev.Event) -> tuple[list[str], Timeline]:
    timeline = Timeline()
    return [timeline.what(row) for row in _rows(*events)], timeline


def test_every_event_of_the_catalog_has_words_of_its_own() -> None:
    from projections.timeline import _DESCRIBE

    task_events = {c.__name__ for c in ev.ALL_EVENTS if c.AGGREGATE == "task"}
    assert task_events <= set(_DESCRIBE)


def test_sub_tasks_are_named_by_their_titles_wherever_they_were_added() -> None:
    whats, _ = _whats(
        ev.TaskCreated(list_id="l", title="T", subtasks=(ev.Subtask(subtask_id="s1", title="a"),)),
        ev.SubtaskAdded(subtask_id="s2", title="b"),
        ev.SubtaskCompleted(subtask_id="s1"),
        ev.SubtaskReopened(subtask_id="s2"),
    )
    assert whats == [
        'created "T" with 1 sub-task',
        'sub-task "b" added',
        'sub-task "a" ticked',
        'sub-task "b" reopened',
    ]


def test_runs_say_their_kind_outcome_cost_and_the_totals_add_up() -> None:
    at = {"node_id": "n", "slot": 1, "workdir": "/w", "prompt": "p"}
    whats, timeline = _whats(
        ev.RunStarted(run_number=1, model="claude-opus-4-1", **at),
        ev.RunFinished(
            run_number=1,
            success=False,
            cause="rate_limited",
            error="429",
            turn_count=2,
            tokens_in=10,
            tokens_out=5,
            cost_usd=0.01,
            duration_ms=1500,
        ),
        ev.RunStarted(run_number=2, is_retry=True, resume_session_id="abcdef123456", **at),
        ev.RunFinished(
            run_number=2,
            success=True,
            turn_count=3,
            tokens_in=20,
            tokens_out=7,
            cost_usd=0.02,
            duration_ms=300_000,
        ),
        ev.WorktreeCommitted(
            run_number=2, commit="0123456789abcdef", files_changed=2, insertions=5, deletions=1
        ),
        ev.TaskCompleted(result="all good"),
        ev.WorktreeDiscarded(kept_ref="refs/claudedo/kept/t/1", head_commit="0123456789abcdef"),
    )
    assert whats == [
        "run 1 started with claude-opus-4-1 on slot 1",
        'run 1 failed (rate_limited): 2 turns, 10/5 tokens, $0.0100, 1.5 s: "429"',
        "run 2 started (retry, resuming session abcdef12) on slot 1",
        "run 2 succeeded: 3 turns, 20/7 tokens, $0.0200, 5.0 min",
        "run 2 committed 0123456789: 2 file(s), +5 -1",
        'done: "all good"',
        "discarded; the work (0123456789) is kept at refs/claudedo/kept/t/1",
    ]
    assert timeline.totals.line() == (
        "2 runs (1 succeeded), $0.0300, 30/12 tokens in/out, 1 commit, done, discarded"
    )


def test_edits_name_what_changed_and_long_text_is_cut_to_one_line() -> None:
    whats, _ = _whats(
        ev.TaskEdited(title="new\nname", max_turns=5, model=None),
        ev.TaskFailed(error="x" * 200, cause="max_turns"),
    )
    assert whats[0] == 'edited title "new name", model cleared, max_turns=5'
    assert whats[1].startswith('failed (max_turns): "xxx') and whats[1].endswith('…"')
    assert len(whats[1]) < 90
