"""The operator console: its `/v1/console` routes on fakeredis and a real redis-server, and the page
itself in a real headless browser (Debian's chromium driven by Playwright), with a screenshot of
each view at 1280 and 390 px wide under tests/artifacts/console/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY, OTHER_KEY, Api
from tests.phone import start

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
CHROMIUM = os.environ.get("VERIFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


async def verified_with_a_wrong_code(api: Api, phone: str, tx_id: str) -> str:
    started = await api.start(phone, tx_id=tx_id)
    await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": "000000"})
    code = await api.latest_code(phone)
    status, _ = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
    assert status == 200
    return str(started["id"])


async def summary(api: Api, key: str = API_KEY) -> dict[str, Any]:
    status, body = await api.call("GET", "/v1/console/summary", key=key)
    assert status == 200, body
    return dict(body)


def live_rows(body: dict[str, Any]) -> set[tuple[str, str, str, int]]:
    return {(r["channel"], r["state"], r["status"], r["count"]) for r in body["live"]["by_state"]}


class TestRoutes:
    async def test_live_counts_follow_every_commit(self, api: Api, clock):
        """Started, verified, failed, canceled, expired: the live counts are exact after each."""
        first = (await api.start("01010000001"))["id"]
        await api.start("01010000002")
        await start(api, "ars", "01024681357")
        assert live_rows(await summary(api)) == {("sms", "code_sent", "pending", 2), ("ars", "calling", "pending", 1)}
        await api.call("POST", f"/v1/verifications/{first}/cancel")
        await verified_with_a_wrong_code(api, "01010000003", "order-3")
        body = await summary(api)
        assert live_rows(body) == {("sms", "code_sent", "pending", 1), ("sms", "verified", "verified", 1),
                                   ("ars", "calling", "pending", 1)}
        assert body["live"]["total"] == 3
        assert (await summary(api, OTHER_KEY))["live"] == {"total": 0, "by_state": []}, "per client"
        clock.advance(api.rt.settings.sms.session_ttl_s + api.rt.settings.result_ttl_s + 1)
        await api.rt.timers.run_once()
        assert (await summary(api))["live"] == {"total": 0, "by_state": []}

    async def test_outcomes_of_the_last_hour_with_their_messages(self, api: Api, clock):
        await verified_with_a_wrong_code(api, "01010000004", "order-4")
        failed = (await api.start("01010000005"))["id"]
        for _ in range(3):
            await api.call("POST", f"/v1/verifications/{failed}/confirm", {"code": "000000"})
        rows = {(r["channel"], r["status"], r["code"]): r for r in (await summary(api))["outcomes"]["by_code"]}
        assert {key: r["count"] for key, r in rows.items()} == {
            ("sms", "verified", "2000"): 1, ("sms", "failed", "4301"): 1}
        failed_row = rows[("sms", "failed", "4301")]
        catalog = api.rt.catalog.get("4301")
        assert failed_row["messages"] == {"ko": catalog.messages["ko"], "en": catalog.messages["en"]}
        clock.advance(3600 + 300 + 1)
        assert (await summary(api))["outcomes"]["by_code"] == []

    async def test_search_by_id_or_tx_id_with_the_timeline_and_diagram(self, api: Api, clock):
        vid = await verified_with_a_wrong_code(api, "01010000006", "order-6")
        status, by_id = await api.call("GET", f"/v1/console/verifications?q={vid}")
        assert status == 200
        (found,) = by_id["results"]
        assert found["verification"]["id"] == vid
        assert "key_token" not in found["verification"], "the console never shows a key token"
        assert [(e["from"], e["to"], e["trigger"]) for e in found["events"]] == [
            (None, "code_sent", "start"), ("code_sent", "code_sent", "confirm"), ("code_sent", "verified", "confirm")]
        assert found["diagram"]["mermaid"].startswith("stateDiagram-v2")
        assert found["diagram"]["visited"] == ["new", "code_sent", "verified"]
        assert found["diagram"]["path"] == [["new", "code_sent"], ["code_sent", "verified"]]
        lines = [line.strip() for line in found["diagram"]["mermaid"].splitlines() if " --> " in line]
        assert [lines[n].split(":")[0] for n in found["diagram"]["edges"]] == [
            "[*] --> new", "new --> code_sent", "code_sent --> verified"]
        clock.advance(api.rt.settings.result_ttl_s + 1)  # finished: its tx_id claim is gone, the lookup is not
        await api.rt.timers.run_once()
        status, by_tx = await api.call("GET", "/v1/console/verifications?q=order-6")
        assert [(r["verification"]["id"], r["verification"]["status"]) for r in by_tx["results"]] == [(vid, "expired")]

    async def test_another_clients_verification_is_not_found(self, api: Api):
        vid = await verified_with_a_wrong_code(api, "01010000007", "order-7")
        for query in (vid, "order-7"):
            status, body = await api.call("GET", f"/v1/console/verifications?q={query}", key=OTHER_KEY)
            assert (status, body["results"]) == (200, [])

    async def test_a_bad_query_or_key(self, api: Api):
        status, body = await api.call("GET", "/v1/console/verifications")
        assert (status, body["error"]["code"]) == (400, "3001")
        status, body = await api.call("GET", "/v1/console/verifications?q=" + "x" * 129)
        assert status == 400
        status, body = await api.call("GET", "/v1/console/summary", key="wrong")
        assert (status, body["error"]["code"]) == (401, "4101")

    async def test_the_page_and_its_files_are_served(self, api: Api):
        async with api.session.get(api.base + "/console") as resp:
            assert resp.status == 200
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            page = await resp.text()
        assert 'id="api-key"' in page
        for name in ("app.js", "style.css", "vendor/mermaid.min.js", "vendor/mermaid.LICENSE"):
            async with api.session.get(f"{api.base}/console/static/{name}") as resp:
                assert resp.status == 200, name


# ---- the page in a real browser ----


def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run the README's test command (scripts/test)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


async def sign_in_by_keyboard(page: Any) -> None:
    """Tab to the key field, submit a wrong key with Enter (refused), then the right one."""
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "api-key":
            break
    assert await page.evaluate("document.activeElement.id") == "api-key"
    await page.keyboard.type("not-a-key")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign-in-error:has-text('not valid')")
    await page.fill("#api-key", API_KEY)
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#console:not([hidden])")
    assert await page.evaluate("sessionStorage.getItem('veriflow.console.key')") == API_KEY


async def check_dashboard(page: Any, api: Api) -> None:
    assert await page.text_content("#live-total") == "2"
    live = await page.inner_text("#live tbody")
    assert "code_sent" in live
    assert "verified" in live
    outcomes = await page.inner_text("#outcomes tbody")
    entry = api.rt.catalog.get("4301")
    for text in ("4301", entry.messages["ko"], entry.messages["en"]):
        assert text in outcomes


async def find_and_check_timeline(page: Any, vid: str) -> None:
    assert await page.evaluate("document.activeElement.id") == "query"
    await page.keyboard.type(vid)
    await page.keyboard.press("Enter")
    await page.wait_for_selector(".diagram[data-rendered=true] svg")
    rows = await page.locator(".timeline tbody tr").all_inner_texts()
    assert len(rows) == 3
    assert "(created)" in rows[0]
    assert "4013" in rows[1]
    assert "verified" in rows[2]
    assert await page.locator(".diagram svg .taken").count() >= 3, "the states taken are highlighted"
    assert await page.locator(".diagram svg .taken-edge").count() >= 3, "and the edges"


@pytest.mark.slow
@pytest.mark.parametrize("store_client", ["fake"], indirect=True)
async def test_the_console_in_a_real_browser(api: Api) -> None:
    """Load the page, tab to the key field, sign in with Enter, see the counts, find a verification
    by id and by tx_id, see its timeline and its rendered diagram; at 1280 and 390 px wide."""
    try:
        from playwright import async_api as playwright_api  # noqa: PLC0415 - only this test drives a browser
    except ImportError:
        pytest.fail("playwright is not installed: run the README's test command (scripts/test)")
    vid = await verified_with_a_wrong_code(api, "01010000008", "order-8")
    failed = (await api.start("01010000009"))["id"]
    for _ in range(3):
        await api.call("POST", f"/v1/verifications/{failed}/confirm", {"code": "000000"})
    await api.start("01010000010")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            for width, height in ((1280, 900), (390, 844)):
                context = await browser.new_context(viewport={"width": width, "height": height})
                page = await context.new_page()
                problems: list[str] = []
                page.on("console", lambda m, p=problems: p.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, p=problems: p.append(str(e)))
                await page.goto(api.base + "/console")
                await page.wait_for_selector("body[data-ready=true]")
                await page.screenshot(path=str(ARTIFACTS / f"sign-in-{width}.png"), full_page=True)
                await sign_in_by_keyboard(page)
                await check_dashboard(page, api)
                await page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}.png"), full_page=True)
                await find_and_check_timeline(page, vid)
                await page.screenshot(path=str(ARTIFACTS / f"timeline-{width}.png"), full_page=True)
                await page.fill("#query", "order-8")
                await page.keyboard.press("Enter")
                await page.wait_for_selector(f".result-title:has-text('{vid}')")
                unexpected = [p for p in problems if "status of 401" not in p]  # the wrong key, on purpose
                assert unexpected == [], unexpected
                await context.close()
        finally:
            await browser.close()
    for view in ("sign-in", "dashboard", "timeline"):
        for width in (1280, 390):
            assert (ARTIFACTS / f"{view}-{width}.png").stat().st_size > 1000
