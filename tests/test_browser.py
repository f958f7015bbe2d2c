"""The board in a real browser: Playwright driving Debian's chromium against a real node with
the fake agent. What a user does in the page, and what a second user sees of it, live.

Every wait is Playwright's: a condition on the page with a deadline, never a sleep. With
CLAUDEDO_SCREENSHOTS=DIR the board and a task page are saved there (docs/images/ holds them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.api_support import make_repo
from tests.conftest import wait_until
from tests.runner_support import Runner

WAIT_MS = 30_000  # the longest any step may take on a busy machine


def _chromium() -> str:
    found = os.environ.get("CLAUDEDO_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "chromium not found: install Debian's chromium (apt-get install chromium; "
            ".ci/run does) or set CLAUDEDO_CHROMIUM",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runner, Path]]:
    root = tmp_path_factory.mktemp("browser")
    gate = root / "gate"
    env = {"FAKE_CLAUDE_SCENARIO": "write", "FAKE_CLAUDE_GATE": str(gate)}
    runner = Runner(root, slots=2, env=env).start()
    runner.add_list(make_repo(root / "repo"), name="demo")
    try:
        yield runner, gate
    finally:
        gate.touch()
        runner.stop()


def _login(browser: Browser, runner: Runner) -> Page:
    page = browser.new_context().new_page()
    url = runner.node.ok("info")["web_url"]
    token = (runner.node.home / "web-token").read_text().strip()
    page.goto(f"{url}/login?token={token}")
    expect(page.locator("#status")).to_contain_text("NATS ok")
    return page


def _card(page: Page, column: str, title: str) -> Any:
    return page.locator(f'section[data-status="{column}"] .card', has_text=title)


def _shoot(page: Page, name: str, tmp: Path) -> None:
    """A screenshot, kept where CLAUDEDO_SCREENSHOTS says (the docs' images)."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("CLAUDEDO_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)


def test_a_task_made_in_the_page_runs_its_output_streams_in_and_it_is_merged(
    browser: Browser, node: tuple[Runner, Path], tmp_path: Path
) -> None:
    runner, gate = node
    gate.unlink(missing_ok=True)
    page = _login(browser, runner)
    watcher = _login(browser, runner)  # a second user, on the board all along
    # A list and a task, made in the page and queued there.
    page.fill("#add-list input[name=name]", "from-browser")
    page.click("#add-list button")
    lists = page.locator("#add-task select[name=list] option", has_text="from-browser")
    expect(lists).to_have_count(1)
    page.select_option("#add-task select[name=list]", label="demo")
    page.fill("#add-task input[name=title]", "Write the notes")
    page.fill("#add-task textarea[name=description]", "[fake:gated]")
    page.fill("#add-task textarea[name=subtasks]", "a first step")
    page.click("#add-task button[type=submit]")
    expect(_card(page, "draft", "Write the notes")).to_be_visible()
    _card(page, "draft", "Write the notes").locator("button", has_text="queue").click()
    # It moves to running by itself, on both boards (the second one was never reloaded).
    expect(_card(page, "running", "Write the notes")).to_be_visible(timeout=WAIT_MS)
    expect(_card(watcher, "running", "Write the notes")).to_be_visible(timeout=WAIT_MS)
    # The task page: what the agent said so far, then the rest as it comes.
    _card(page, "running", "Write the notes").locator("a").click()
    output = page.locator("#output .entries")
    expect(output).to_contain_text("→ Write NOTES.md", timeout=WAIT_MS)
    expect(output).not_to_contain_text("Done. The change is in place.")
    gate.touch()
    expect(output).to_contain_text("Done. The change is in place.", timeout=WAIT_MS)
    expect(output.locator(".result")).to_contain_text("succeeded")
    expect(page.locator('[data-field="status"]')).to_have_text("done", timeout=WAIT_MS)
    expect(_card(watcher, "done", "Write the notes")).to_be_visible(timeout=WAIT_MS)
    # A tool call is folded until opened.
    tool = output.locator("details.tool").first
    expect(tool.locator("pre")).to_be_hidden()
    tool.locator("summary").click()
    expect(tool.locator("pre")).to_contain_text("NOTES.md")
    _shoot(page, "task", tmp_path)
    # The diff, per file, then merge: the worktree says merged, and so does the CLI.
    page.click("text=diff")
    expect(page.locator('details[data-file="fake.txt"]')).to_contain_text(
        "written by the fake agent"
    )
    page.go_back()
    page.click("button:has-text('merge')")
    expect(page.locator("#live")).to_contain_text("merged", timeout=WAIT_MS)
    (task,) = [t for t in runner.node.ok("tasks") if t["title"] == "Write the notes"]
    assert runner.task(task["id"])["worktree"]["status"] == "merged"
    watcher.goto(watcher.url)
    _shoot(watcher, "board", tmp_path)


def test_a_running_task_is_cancelled_from_the_board(
    browser: Browser, node: tuple[Runner, Path]
) -> None:
    runner, gate = node
    gate.unlink(missing_ok=True)
    page = _login(browser, runner)
    task = runner.add_task("Cancel me", description="[fake:gated]")
    runner.wait_run(task)
    card = _card(page, "running", "Cancel me")
    expect(card).to_be_visible(timeout=WAIT_MS)
    card.locator("button", has_text="cancel").click()
    expect(_card(page, "cancelled", "Cancel me")).to_be_visible(timeout=WAIT_MS)
    assert runner.task(task)["status"] == "cancelled"
    gate.touch()


def test_a_refused_action_shows_the_clis_error(browser: Browser, node: tuple[Runner, Path]) -> None:
    runner, _ = node
    page = _login(browser, runner)
    cli = runner.node.cli("task", "add", "demo", "")
    page.fill("#add-task input[name=title]", "")
    page.click("#add-task button[type=submit]")
    alert = page.locator("[role=alert]")
    expect(alert).to_have_text(cli.err.strip())
    # On a task page too: continuing without a prompt.
    done = runner.add_task("Finished first")
    runner.wait_status(done)
    page.goto(f"{runner.node.ok('info')['web_url']}/tasks/{done}")
    page.click("#continue button")
    expect(page.locator("[role=alert]")).to_contain_text("error: ")
    assert len(runner.task(done)["runs"]) == 1


def test_the_board_without_the_token_is_refused(
    browser: Browser, node: tuple[Runner, Path]
) -> None:
    runner, _ = node
    page = browser.new_context().new_page()
    url = runner.node.ok("info")["web_url"]
    response = page.goto(url)
    assert response is not None and response.status == 401
    expect(page.locator("body")).to_contain_text("no access")
    response = page.goto(f"{url}/login?token=not-the-token")
    assert response is not None and response.status == 403


def test_the_page_finds_the_node_again_after_a_restart(
    browser: Browser, node: tuple[Runner, Path]
) -> None:
    runner, _ = node
    page = _login(browser, runner)
    url = runner.node.ok("info")["web_url"]
    runner.node.stop()
    runner.node.start()
    assert runner.node.ok("info")["web_url"] == url  # the port of its last life
    # The open page reconnects by itself and shows what happened while it was away.
    task = runner.add_task("After the restart", queue=False)
    expect(_card(page, "draft", "After the restart")).to_be_visible(timeout=WAIT_MS)
    wait_until(lambda: runner.task(task)["status"] == "draft", 10, "the task")


def test_what_is_typed_in_a_form_survives_a_live_update(
    browser: Browser, node: tuple[Runner, Path]
) -> None:
    runner, _ = node
    page = _login(browser, runner)
    page.fill("#add-task input[name=title]", "half typed")
    page.locator("#add-task-settings summary").click()
    page.fill("#add-task input[name=model]", "some-model")
    page.locator("h2").first.click()  # out of the form: the page may update now
    runner.add_task("Made elsewhere", queue=False)
    expect(_card(page, "draft", "Made elsewhere")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#add-task input[name=title]")).to_have_value("half typed")
    expect(page.locator("#add-task input[name=model]")).to_have_value("some-model")
    expect(page.locator("#add-task-settings")).to_have_attribute("open", "")
