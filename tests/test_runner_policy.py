"""The runner's policy, without processes: what to run next, decided from the folded task.

Hypothesis drives random histories through the policy and the fold: runs that succeed or fail
in every way the agent fails, nodes that crash before a session opens, after it opened, or
between a run's RunFinished and the task's terminal event, recovery by this node or another,
worktree folders that vanish, continues and requeues. After each attempt the rules hold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events as ev
from claudedo_actors.agent import prompts
from claudedo_actors.runner import policy
from projections import ListState, TaskState, fold_list, fold_task

ORIGIN = ev.Origin(node_id="n1", correlation_id="c", actor="test")
TASK_ID = ev.new_aggregate_id()
LIST_ID = ev.new_aggregate_id()
_seq = itertools.count(1)


def _list() -> ListState:
    env = ev.envelop(ev.ListCreated(name="l"), LIST_ID, ORIGIN)
    return fold_list(None, env, next(_seq))


LIST = _list()


@dataclass
class History:
    """A task folded event by event, as the log would hold it."""

    state: TaskState
    events: list[ev.Event] = field(default_factory=list)

    @classmethod
    def new(cls, budget: float | None = None, turns: int | None = None) -> History:
        created = ev.TaskCreated(
            list_id=LIST_ID, title="Fix it", max_budget_usd=budget, max_turns=turns
        )
        return cls(fold_task(None, ev.envelop(created, TASK_ID, ORIGIN), next(_seq)), [created])

    def add(self, *events: ev.Event) -> None:
        for e in events:
            self.state = fold_task(self.state, ev.envelop(e, TASK_ID, ORIGIN), next(_seq))
            self.events.append(e)


def _claim(h: History, node: str) -> policy.Workdir:
    h.add(ev.TaskClaimed(node_id=node, slot=0), ev.TaskStarted(node_id=node, slot=0, workdir="/w"))
    return policy.Workdir("/w", True)


def _start(h: History, step: policy.StartRun, node: str) -> int:
    number = h.state.run_count + 1
    if step.session_lost is not None:
        h.add(step.session_lost)
    h.add(
        ev.RunStarted(
            run_number=number, is_retry=step.is_retry, is_continue=step.is_continue,
            node_id=node, slot=0, workdir="/w", prompt=step.prompt,
            resume_session_id=step.resume_session_id,
        )
    )  # fmt: skip
    return number


def _finish(h: History, number: int, **fields: object) -> None:
    h.add(ev.RunFinished(run_number=number, **fields))  # type: ignore[arg-type]


def _lose(h: History) -> None:
    """Recovery after the node died: open runs are lost, then the policy settles the task."""
    for run in h.state.runs:
        if run.finished_at is None:
            _finish(h, run.run_number, success=False, cause="worker_lost", error="lost")
    h.add(policy.settle_lost(h.state, LIST))


# --- the rules, one test each --------------------------------------------------------------


def test_queued_task_starts_run_one_with_the_task_prompt() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    step = policy.next_step(h.state, LIST, "n1", _claim(h, "n1"))
    assert isinstance(step, policy.StartRun)
    assert step.prompt == prompts.task_prompt("Fix it", "", ())
    assert step.resume_session_id is None and not step.is_retry and not step.is_continue


def test_missing_list_fails_the_task_list_not_found() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    step = policy.next_step(h.state, None, "n1", None)
    assert step == policy.Settle(
        event=ev.TaskFailed(error="List not found.", cause="list_not_found")
    )


def test_failed_run_with_session_is_retried_once_resuming_it() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _finish(h, n, success=False, cause="api_error", error="boom")
    retry = policy.next_step(h.state, LIST, "n1", wd)
    assert isinstance(retry, policy.StartRun)
    assert retry.is_retry and retry.resume_session_id == "s1"
    assert retry.prompt == prompts.retry_prompt("boom")
    n2 = _start(h, retry, "n1")
    h.add(ev.RunSessionOpened(run_number=n2, session_id="s1"))
    _finish(h, n2, success=False, cause="api_error", error="again")
    assert policy.next_step(h.state, LIST, "n1", wd) == policy.Settle(
        event=ev.TaskFailed(error="again", cause="api_error")
    )


def test_failed_run_without_session_is_not_retried() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    _finish(h, n, success=False, cause="spawn_failed", error="no claude")
    step = policy.next_step(h.state, LIST, "n1", wd)
    assert step == policy.Settle(event=ev.TaskFailed(error="no claude", cause="spawn_failed"))


def test_budget_exhausted_run_is_not_retried() -> None:
    h = History.new(budget=1.0)
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _finish(h, n, success=False, cause="budget", error="over", cost_usd=0.2)
    assert isinstance(policy.next_step(h.state, LIST, "n1", wd), policy.Settle)


def test_crash_after_a_successful_run_completes_without_running_again() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _finish(h, n, success=True, result="done!")
    _lose(h)  # the node died before TaskCompleted
    assert h.state.status == "queued"
    step = policy.next_step(h.state, LIST, "n2", _claim(h, "n2"))
    assert step == policy.Complete(run_number=n, result="done!")


def test_crash_after_the_retry_finished_fails_without_a_third_run() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    for error in ("first", "second"):
        step = policy.next_step(h.state, LIST, "n1", wd)
        assert isinstance(step, policy.StartRun)
        n = _start(h, step, "n1")
        h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
        _finish(h, n, success=False, cause="api_error", error=error)
    _lose(h)  # died between the retry's RunFinished and TaskFailed
    assert h.state.status == "failed" and h.state.error == "second"
    assert h.state.run_count == 2


def test_run_lost_before_its_session_opened_is_run_again_and_keeps_the_retry() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    _lose(h)
    again = policy.next_step(h.state, LIST, "n1", _claim(h, "n1"))
    assert isinstance(again, policy.StartRun)
    assert not again.is_retry and again.resume_session_id is None


def test_continue_resumes_the_latest_session_and_is_not_retried() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _finish(h, n, success=True, result="ok")
    h.add(ev.TaskCompleted(result="ok"), ev.TaskQueued(follow_up_prompt="more"))
    wd = _claim(h, "n1")
    step = policy.next_step(h.state, LIST, "n1", wd)
    assert isinstance(step, policy.StartRun)
    assert step.is_continue and step.resume_session_id == "s1" and step.prompt == "more"
    n2 = _start(h, step, "n1")
    h.add(ev.RunSessionOpened(run_number=n2, session_id="s1"))
    _finish(h, n2, success=False, cause="api_error", error="nope")
    assert policy.next_step(h.state, LIST, "n1", wd) == policy.Settle(
        event=ev.TaskFailed(error="nope", cause="api_error")
    )


def test_continue_interrupted_before_its_session_opened_resumes_the_earlier_session() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _finish(h, n, success=True, result="ok")
    h.add(ev.TaskCompleted(result="ok"), ev.TaskQueued(follow_up_prompt="more"))
    wd = _claim(h, "n1")
    _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    _lose(h)  # killed before the continue's session opened
    step = policy.next_step(h.state, LIST, "n1", _claim(h, "n1"))
    assert isinstance(step, policy.StartRun)
    assert step.is_continue and step.resume_session_id == "s1" and step.prompt == "more"


def test_continue_without_runs_or_session_fails_with_the_reference_errors() -> None:
    h = History.new()
    h.add(ev.TaskQueued(follow_up_prompt="more"))
    step = policy.next_step(h.state, LIST, "n1", _claim(h, "n1"))
    assert step == policy.Settle(
        event=ev.TaskFailed(error=policy.NO_PREVIOUS_RUN, cause="agent_error")
    )
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    _finish(h, n, success=False, cause="spawn_failed", error="x")
    h.add(ev.TaskFailed(error="x", cause="spawn_failed"), ev.TaskQueued(follow_up_prompt="m"))
    step = policy.next_step(h.state, LIST, "n1", _claim(h, "n1"))
    assert step == policy.Settle(event=ev.TaskFailed(error=policy.NO_SESSION, cause="agent_error"))


def test_retry_on_another_node_starts_a_fresh_session_and_records_the_lost_one() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _lose(h)
    step = policy.next_step(h.state, LIST, "n2", _claim(h, "n2"))
    assert isinstance(step, policy.StartRun)
    assert step.is_retry and step.resume_session_id is None
    assert step.session_lost is not None and step.session_lost.session_id == "s1"
    assert "cannot be resumed" in step.prompt


def test_session_node_is_the_node_the_next_run_resumes_on() -> None:
    h = History.new()
    h.add(ev.TaskQueued())
    wd = _claim(h, "n1")
    n = _start(h, policy.next_step(h.state, LIST, "n1", wd), "n1")  # type: ignore[arg-type]
    assert policy.session_node(h.state) is None
    h.add(ev.RunSessionOpened(run_number=n, session_id="s1"))
    _lose(h)
    assert policy.session_node(h.state) == "n1"


# --- random histories ----------------------------------------------------------------------

OUTCOMES = ("success", "api_error", "max_turns", "budget", "spawn_failed", "cancelled", "nologin")
CRASHES = ("none", "none", "none", "before_session", "after_session", "after_finish")


@st.composite
def histories(draw: st.DrawFn) -> tuple[History, list[tuple[int, int, bool]], list[str]]:
    """A task taken through 1-3 attempts by the policy while the world does what it likes.
    Returns the history, each attempt's (first run number, runs before it, is_continue), and
    the violations found along the way."""
    budget = draw(st.none() | st.floats(0.05, 2.0))
    turns = draw(st.none() | st.integers(1, 20))
    h = History.new(budget, turns)
    attempts: list[tuple[int, int, bool]] = []
    bad: list[str] = []
    crashes_left = draw(st.integers(0, 6))
    sessions = itertools.count(1)
    for a in range(draw(st.integers(1, 3))):
        follow_up = "more" if a and draw(st.booleans()) else None
        h.add(ev.TaskQueued(follow_up_prompt=follow_up))
        attempts.append((h.state.run_count + 1, h.state.run_count, follow_up is not None))
        for _claims in range(20):
            if h.state.status != "queued":
                break
            node = draw(st.sampled_from(["n1", "n2"]))
            wd = _claim(h, node)
            wd = policy.Workdir(wd.path, draw(st.booleans()) or draw(st.booleans()))
            if draw(st.integers(0, 9)) == 0 and h.state.status in ("claimed", "running"):
                h.add(ev.TaskCancelRequested())
            while h.state.status in ("claimed", "running"):
                step = policy.next_step(h.state, LIST, node, wd)
                if isinstance(step, policy.Settle):
                    h.add(step.event)
                    break
                if isinstance(step, policy.Complete):
                    h.add(ev.TaskCompleted(result=step.result))
                    break
                if step.is_retry:
                    _check_retry_limits(h.state, step, bad)
                n = _start(h, step, node)
                crash = draw(st.sampled_from(CRASHES)) if crashes_left else "none"
                crashes_left -= crash != "none"
                if crash == "before_session":
                    _lose(h)
                    break
                outcome = draw(st.sampled_from(OUTCOMES))
                if outcome != "spawn_failed":
                    sid = step.resume_session_id or f"s{next(sessions)}"
                    h.add(ev.RunSessionOpened(run_number=n, session_id=sid))
                if crash == "after_session":
                    _lose(h)
                    break
                cost = draw(st.floats(0.0, 1.0))
                used = draw(st.integers(1, 10))
                if outcome == "success":
                    _finish(h, n, success=True, result="ok", cost_usd=cost, turn_count=used)
                else:
                    _finish(h, n, success=False, cause=outcome, error=outcome, cost_usd=cost,
                            turn_count=used)  # fmt: skip
                if crash == "after_finish":
                    _lose(h)
                    break
        if h.state.status not in ("done", "failed", "cancelled"):
            bad.append(f"attempt {a} ended {h.state.status}")
            break
    return h, attempts, bad


def _check_retry_limits(task: TaskState, step: policy.StartRun, bad: list[str]) -> None:
    first = policy.attempt_runs(task)[-1]
    if task.max_budget_usd is not None:
        left = step.config.max_budget_usd
        if left is None or left > task.max_budget_usd - (first.cost_usd or 0) + 1e-9:
            bad.append(f"retry budget {left} exceeds what run {first.run_number} left")
    if task.max_turns is not None:
        left_turns = step.config.max_turns
        if left_turns is None or left_turns > task.max_turns - (first.turn_count or 0):
            bad.append(f"retry turns {left_turns} exceed what run {first.run_number} left")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_keep_the_runner_rules(
    case: tuple[History, list[tuple[int, int, bool]], list[str]],
) -> None:
    h, attempts, bad = case
    assert bad == []
    bounds = [first for first, _, _ in attempts[1:]] + [h.state.run_count + 1]
    for (first, _before, is_continue), end in zip(attempts, bounds, strict=True):
        runs = [r for r in h.state.runs if first <= r.run_number < end]
        counted = [r for r in runs if not (r.session_id is None and r.cause == "worker_lost")]
        retries = [r for r in counted if r.is_retry]
        # Retry once: at most one retry, never in a continue, only after a failed first run.
        assert len(retries) <= (0 if is_continue else 1)
        if retries:
            before = [r for r in counted if r.run_number < retries[0].run_number]
            assert before and before[-1].success is False and before[-1].session_id
        # Nothing runs after a run that succeeded, in its attempt.
        for i, r in enumerate(counted):
            if r.success:
                assert i == len(counted) - 1, f"run after success in {counted}"
        # A continue's runs are continues.
        if is_continue:
            assert all(r.is_continue for r in counted)
    # The task ended, and done only with a run that succeeded.
    assert h.state.status in ("done", "failed", "cancelled")
    if h.state.status == "done":
        last_attempt = [r for r in h.state.runs if r.run_number >= attempts[-1][0]]
        assert any(r.success for r in last_attempt)


def test_a_retry_gets_what_is_left_of_the_limits() -> None:
    config = policy.left_for_retry(
        msgspec.convert({"max_budget_usd": 1.0, "max_turns": 10}, policy.AgentConfig),
        cost_usd=0.4,
        turns=3,
    )
    assert config is not None
    assert abs((config.max_budget_usd or 0) - 0.6) < 1e-9 and config.max_turns == 7
    spent = msgspec.convert({"max_budget_usd": 1.0}, policy.AgentConfig)
    assert policy.left_for_retry(spent, cost_usd=1.0, turns=None) is None
