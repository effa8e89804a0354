"""The status page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

It opens ``/status`` without credentials and gets the sign-in form, signs in with the admin key, then
sees every circuit off (none configured), traffic numbers move, an account start cooling after an
injected 429 and a bad config edit appear as the last error at its file:line:column, taking a
screenshot of each; then the fix (which turns circuit breaking on) greys that error as fixed, and a
500 ejects an account whose row counts down. The page logs no console error and loads nothing that
fails (no /favicon.ico 404) along the way. The screenshots go to the test's temporary directory;
``ROUTER_STATUS_SCREENSHOTS=docs`` writes them to ``docs/status-*.png`` instead (the README shows those):

    ROUTER_STATUS_SCREENSHOTS=docs python -m pytest -q tests/test_status_browser.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_RETRY, ROOT, Harness, start_gateway

# CI (.ci/run, CI=true) installs both and must run this test: there a missing one is a failure, not a skip
IN_CI = os.environ.get("CI") == "true"
if IN_CI:
    import playwright.async_api as _playwright_api
    playwright = _playwright_api
else:
    playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not IN_CI and not Path(CHROMIUM).exists(), reason="no chromium (CI installs Debian's)")

KEY, ADMIN_KEY = "sk-browser-client-1", "sk-browser-admin-2"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - {{name: ci-bot, key: "{KEY}"}}
    - {{name: alice, key: "{KEY}-alice"}}
  admin_keys:
    - {{name: ops, key_sha256: "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"}}
"""
WAIT_MS = 8000  # every wait for the page is bounded
BROKEN = "model_mapping:\n  gpt-4o: {provider: simulator, model: [unclosed\n"
BROKEN_AT = "3:1"  # where the YAML parser finds the unclosed flow sequence ends: line 3, column 1
CIRCUIT = "circuit: {consecutive_failures: 1, base_ejection: 20s}\n"


@pytest.fixture
async def h(tmp_path: Path, config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH + "server: {reload_debounce: 50ms}\n")
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    harness = await start_gateway(config_dir, watch=True)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return ROOT / "docs" if os.environ.get("ROUTER_STATUS_SCREENSHOTS") == "docs" else tmp_path


async def chat(h: Harness, key: str, model: str = "gemini-2.5-flash") -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hello from the browser test"}]}
    status, _, _ = await h.post_json("/v1/chat/completions", body, headers={"Authorization": f"Bearer {key}"})
    return status


async def test_the_status_page_live(h: Harness, shots: Path) -> None:
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            problems = _watch(page)
            await _sign_in(page, h)
            await _circuits_off(page)
            await _traffic_moves(page, h)
            await _account_cools(page, h)
            await _bad_edit_shows(page, h)
            await page.evaluate("() => window.scrollTo(0, 0)")
            await page.screenshot(path=str(shots / "status-overview.png"))
            await page.locator("#traffic-section").screenshot(path=str(shots / "status-traffic.png"))
            await page.locator("#failed-section").screenshot(path=str(shots / "status-failed.png"))
            await _fix_shows_fixed(page, h)
            await _ejection_counts_down(page, h)
            assert not problems, problems
        finally:
            await browser.close()


def _watch(page: Any) -> list[str]:
    """The page's console errors and failed loads (a missing favicon would be one). The sign-in's
    refused ``/admin/status`` (401, the wrong key on purpose) is the only error answer expected."""
    problems: list[str] = []

    def console(msg: Any) -> None:
        if msg.type == "error" and not _refused_sign_in(msg.text, msg.location.get("url", "")):
            problems.append(f"console: {msg.text} ({msg.location})")

    def response(r: Any) -> None:
        if r.status >= 400 and not (r.status == 401 and r.url.endswith("/admin/status")):
            problems.append(f"{r.status} {r.url}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    return problems


def _refused_sign_in(text: str, url: str) -> bool:
    """Chromium's console line for a fetch answered 401: the sign-in's probe and the wrong key."""
    return "status of 401" in text and url.endswith("/admin/status")


async def _sign_in(page: Any, h: Harness) -> None:
    await page.goto(h.url + "/status?every=300")
    await page.locator("#login-form").wait_for(state="visible")  # the form, not a blank 401
    assert await page.locator("#dash").is_hidden()
    await page.fill("#key", "sk-wrong")
    await page.click("#login-form button")
    await page.locator("#login-error").wait_for(state="visible")
    await page.fill("#key", ADMIN_KEY)
    await page.click("#login-form button")
    await page.locator("#dash").wait_for(state="visible")
    await page.wait_for_function("() => document.getElementById('generation').textContent === '1'", timeout=WAIT_MS)
    assert "strict" in await page.text_content("#auth-mode")
    assert await page.locator("#providers tr[data-provider='simulator'] .pill").first.text_content() == "SIMULATED"
    html = await page.content()
    assert ADMIN_KEY not in html and KEY not in html


async def _traffic_moves(page: Any, h: Harness) -> None:
    row = page.locator("#traffic tbody tr[data-name='gemini-2.5-flash'] td:nth-child(3)")
    for _ in range(6):
        assert await chat(h, KEY) == 200
    assert await chat(h, f"{KEY}-alice", "gpt-4o") == 200
    await page.wait_for_function(
        "() => { const r = document.querySelector(\"#traffic tr[data-name='gemini-2.5-flash'] td:nth-child(3)\");"
        " return r !== null && Number(r.textContent) >= 6; }", timeout=WAIT_MS)
    first = int(await row.text_content())
    for _ in range(4):
        await chat(h, KEY)
    await page.wait_for_function(
        f"() => Number(document.querySelector(\"#traffic tr[data-name='gemini-2.5-flash'] td:nth-child(3)\")"
        f".textContent) >= {first + 4}", timeout=WAIT_MS)
    assert float(await page.text_content("#total-rps")) > 0
    await page.click("#dims button[data-dim='key']")
    await page.locator("#traffic tbody tr[data-name='ci-bot']").wait_for()
    await page.click("#dims button[data-dim='model']")


async def _account_cools(page: Any, h: Harness) -> None:
    await h.faults("sim-key-a", {"status": 429, "retry_after": 30})
    await h.faults("sim-key-b", {"status": 429, "retry_after": 30})
    assert await chat(h, KEY) == 429
    cooling = page.locator("#accounts tr[data-state='cooling']")
    await cooling.first.wait_for()
    text = await cooling.first.locator(".countdown").text_content()
    assert text.endswith(" s") and 0 < float(text.split()[0]) <= 30
    await page.locator("#failed tbody tr").first.wait_for()
    assert await page.locator("#failed tbody tr").first.get_attribute("data-request-id")


async def _bad_edit_shows(page: Any, h: Harness) -> None:
    (h.config_dir / "99-broken.yaml").write_text(BROKEN)
    await page.wait_for_function("() => document.getElementById('last-error').textContent.includes('99-broken.yaml:')",
                                 timeout=WAIT_MS)
    text = await page.text_content("#last-error")
    assert f"99-broken.yaml:{BROKEN_AT}" in text, text  # the file, line and column
    assert await page.get_attribute("#last-error", "class") == "bad"
    assert await page.text_content("#generation") == "1"  # the old config still serves


async def _circuits_off(page: Any) -> None:
    """No circuit breaking configured: the providers' and the accounts' circuits both read off."""
    await page.locator("#accounts tbody tr").first.wait_for()
    for table in ("providers", "accounts"):
        pills = await page.locator(f"#{table} tbody td:nth-child({4 if table == 'providers' else 5}) .pill")\
            .all_text_contents()
        assert pills and set(pills) == {"off"}, (table, pills)


async def _fix_shows_fixed(page: Any, h: Harness) -> None:
    """The broken file fixed (circuit breaking turned on with it): the error stays, greyed, as fixed."""
    (h.config_dir / "99-broken.yaml").write_text(CIRCUIT)
    await page.wait_for_function("() => document.getElementById('generation').textContent === '2'", timeout=WAIT_MS)
    await page.wait_for_function("() => document.getElementById('last-error').className === 'fixed'",
                                 timeout=WAIT_MS)
    text = await page.text_content("#last-error")
    assert text.startswith("fixed by generation 2") and f"99-broken.yaml:{BROKEN_AT}" in text, text


async def _ejection_counts_down(page: Any, h: Harness) -> None:
    """A 500 ejects an account (consecutive_failures: 1): its row counts down to the ejection's end."""
    h.gateway.reset_accounts("simulator/sim-a@simulator.local")
    h.gateway.reset_accounts("simulator/sim-b@simulator.local")
    await h.faults("sim-key-a", {"status": 500, "message": "down"})
    for _ in range(4):  # until an attempt used sim-a (the pick may start with sim-b)
        assert await chat(h, KEY) == 200  # when sim-a failed, the other account answered
        if any(a["state"] == "ejected" for a in h.gateway.accounts_status()):
            break
    row = page.locator("#accounts tr[data-state='ejected']")
    await row.first.wait_for()
    assert await row.first.get_attribute("data-account") == "simulator/sim-a@simulator.local"
    text = await row.first.locator(".countdown").text_content()
    assert text.endswith(" s (ejected)") and 0 < float(text.split()[0]) <= 20, text
    assert await row.first.locator("td:nth-child(5) .pill").text_content() == "open"
    await page.wait_for_function(  # it moves between polls, like a cooldown's
        f"() => parseFloat(document.querySelector(\"#accounts tr[data-state='ejected'] .countdown\").textContent)"
        f" < {float(text.split()[0])}", timeout=WAIT_MS)

