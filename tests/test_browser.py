"""The tutorial approval in a real browser: headless Chromium on the admin of a live server.

A `runworker` subprocess runs the tutorial `research` workflow against the test database; a
reviewer (staff, `view` + `signal` permissions only) logs into the admin, finds the run among
the pending approvals, clicks Approve and watches the run complete — the page refreshes
itself. A starter (`view` + `start`) starts a run with the admin's form and watches the run
list pick up a run started elsewhere, with no reload by hand.

Set `BELUGA_SCREENSHOTS=1` to refresh `docs/images/admin-approval.png` (the run waiting for
approval) and `docs/images/admin-approval-completed.png` (after approval) for the docs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beluga_workflows import workflow
from tests.api_fixtures import PASSWORD, users_fixture  # noqa: F401
from tests.harness import REPO_ROOT, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("BELUGA_SCREENSHOTS") == "1"
IMAGES = REPO_ROOT / "docs" / "images"


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A page in headless Chromium, closed on exit.

    Keep ORM calls outside this block: Playwright's sync API runs an event loop on this
    thread, and Django would give code inside it a separate, never-closed connection.
    """
    from playwright.sync_api import sync_playwright

    # Fail, never skip: a green run must mean the admin was really clicked through.
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (`make browser` installs it)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            yield page
        finally:
            chromium.close()


def test_reviewer_approves_the_tutorial_run_in_the_admin(live_server, worker, users):
    executor = workflow.get_executor()
    executor.start(
        "research",
        workflow.WorkflowOptions(
            id="research-q4-2025", input="Q4 revenue analysis", timeout=timedelta(hours=48)
        ),
    )
    wait_until(
        lambda: executor.describe("research-q4-2025").waiting_for == "signal:approval",
        30,
        message="the tutorial run waiting for approval",
    )

    requested: list[str] = []
    with chromium_page() as page:
        page.on("request", lambda request: requested.append(request.url))
        _approve_in_the_admin(page, live_server.url)

    # Everything the admin loaded came from the live server: no CDN, no external asset.
    assert requested and all(url.startswith(live_server.url) for url in requested), [
        url for url in requested if not url.startswith(live_server.url)
    ]
    assert executor.describe("research-q4-2025").result.startswith("Final Report")


def _approve_in_the_admin(page: Any, base_url: str) -> None:
    """Log in as the reviewer, find the run among the pending approvals, approve it, and wait
    until its page says completed."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.get_by_role("link", name="Workflow runs").first.click()
    page.get_by_role("link", name="Pending approvals").click()

    row = page.locator("#bw-approvals tr[data-workflow-id='research-q4-2025']")
    expect(row).to_contain_text("signal:approval")
    row.get_by_role("link", name="research-q4-2025").click()
    expect(page.locator("#bw-status")).to_have_text("running")
    expect(page.locator("#bw-waiting")).to_contain_text("signal:approval")
    expect(page.locator("#bw-history")).to_contain_text("Waiting for signal 'approval'")
    if SCREENSHOTS:
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "admin-approval.png"), full_page=True)

    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".messagelist")).to_contain_text("Approved 'research-q4-2025'")

    # No reload by hand: the page refreshes itself while the run moves on.
    expect(page.locator("#bw-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#bw-result")).to_contain_text("Final Report")
    expect(page.locator("#bw-history")).to_contain_text("Signal 'approval' = true from 'reviewer'")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    if SCREENSHOTS:
        page.screenshot(path=str(IMAGES / "admin-approval-completed.png"), full_page=True)


def test_a_starter_starts_a_run_from_the_admin_and_lists_refresh_themselves(
    live_server, worker, users, counter_dir
):
    import subprocess
    import sys

    from playwright.sync_api import expect

    from tests.conftest import worker_env

    env = worker_env(counter_dir)
    with chromium_page() as page:
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "starter")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.get_by_role("link", name="Workflow runs").first.click()
        page.get_by_role("link", name="Start a run").click()

        # Not JSON: the form says so beside the field and starts nothing.
        page.select_option("#id_workflow", "research")
        page.fill("#id_id", "from-the-admin")
        page.fill("#id_input", "Q1 costs")
        page.get_by_role("button", name="Start").click()
        expect(page.locator(".field-input .errorlist")).to_contain_text("Not JSON")

        page.fill("#id_input", '"Q1 costs"')
        page.get_by_role("button", name="Start").click()
        expect(page.locator(".messagelist")).to_contain_text("Started research as 'from-the-admin'")
        # The run's page, which follows the run to its approval wait by itself.
        expect(page.locator("#bw-waiting")).to_contain_text("signal:approval", timeout=30_000)
        expect(page.locator("#bw-history")).to_contain_text(
            "Started research with input “Q1 costs”"
        )

        # The list shows a run started elsewhere (the CLI) without a reload by hand.
        page.get_by_role("link", name="Workflow runs").first.click()
        expect(page.locator("#result_list")).to_contain_text("from-the-admin")
        subprocess.run(
            [sys.executable, "manage.py", "workflow", "start", "research", "--id", "from-the-cli",
             "--input", '"Q2"'],
            cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        expect(page.locator("#result_list")).to_contain_text("from-the-cli", timeout=15_000)
