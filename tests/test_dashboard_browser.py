"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright's Python
package): sign in, see the pool after a scripted mix of traffic and faults, add and test a key,
change a setting and see the next request follow it, switch language, sign out. Screenshots of the
main views at desktop and phone width go to tests/artifacts/."""
from __future__ import annotations

import httpx

from tests.conftest import KEYS, make_key
from tests.support.browser import expect, shot

ADMIN = "admin-password-abcdefghij"


def traffic(running, fake) -> None:
    """A scripted mix: successes, a key out of daily quota, an invalid key, an unknown model."""
    with httpx.Client(base_url=running.url, headers=running.auth(), timeout=20) as http:
        def chat(model="gemini-2.5-flash", n=1):
            return http.post("/v1/chat/completions",
                             json={"model": model, "messages": [{"role": "user", "content": "hi"}] * n})
        for _ in range(4):
            assert chat().status_code == 200
        fake.keys[KEYS[0]] = "quota_day"
        fake.keys[KEYS[1]] = "invalid"
        assert chat().status_code == 200
        assert chat("no-such-model").status_code == 404
        assert chat("gemini-2.0-flash").status_code == 200


def sign_in(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("#login-form")
    page.fill("#password", ADMIN)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")


def test_dashboard_end_to_end(browser, start_keyloom, fake):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, API_KEY_DAILY_LIMIT="20")
    traffic(running, fake)
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # -- sign in: a wrong password is refused on the page, the right one opens the dashboard
    page.goto(running.url + "/")
    assert page.locator("#keys-body").count() == 0
    shot(page, "login-desktop")
    page.fill("#password", "wrong")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("Wrong password")
    page.fill("#password", ADMIN)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")

    # -- the pool after the traffic: states, usage, charts, requests
    rows = page.locator("#keys-body tr")
    assert rows.count() == 3
    states = sorted(rows.nth(i).get_attribute("data-state") for i in range(3))
    assert states == ["active", "disabled", "exhausted"]
    disabled = page.locator("#keys-body tr[data-state='disabled']")
    assert "InvalidKey" in disabled.inner_text() and "Re-enable" in disabled.inner_text()
    assert page.text_content("#svc-requests") == "7"
    assert page.text_content("#svc-success") == "85.7%"
    assert page.locator("#chart-minutes rect.bar-ok").count() >= 1
    assert page.locator("#chart-days rect.bar-client").count() == 1
    assert page.locator("#req-body tr:not(.error-row)").count() == 7
    assert "no-such-model" in page.inner_text("#req-body")
    html = page.content()
    assert not [k for k in KEYS if k in html] and "AIza…" in html
    shot(page, "dashboard-desktop")
    shot(page, "dashboard-desktop-full")

    # -- filter keys by state, and requests by status
    page.select_option("#key-filter", "disabled")
    assert page.locator("#keys-body tr").count() == 1
    page.select_option("#key-filter", "")
    page.select_option("#req-filter", "error")
    expect(page.locator("#req-body tr:not(.error-row)")).to_have_count(1)

    # -- add a key; it is tested at once with a progress display
    new_key = make_key(77)
    fake.allow(new_key)
    page.click("#add-keys summary")
    page.fill("#add-text", f"{new_key}, {KEYS[2]}, not-a-key")
    page.click("#add-button")
    expect(page.locator("#add-result")).to_contain_text("1 added")
    assert "1 already there" in page.text_content("#add-result")
    assert "1 not a Gemini key" in page.text_content("#add-result")
    expect(page.locator("#test-progress-text")).to_contain_text("Tested 1 keys")
    assert "1 working" in page.text_content("#test-progress-text")
    expect(page.locator("#keys-body tr")).to_have_count(4)
    assert new_key not in page.content()

    # -- test every key: the invalid one fails, the others work
    page.click("#test-all")
    expect(page.locator("#test-progress-text")).to_contain_text("Tested 4 keys")
    assert "3 working, 1 failing" in page.text_content("#test-progress-text")
    shot(page, "keys-tested-desktop")

    # -- change a live setting; the next request follows it
    row = page.locator("#set-body tr[data-setting='MAX_MESSAGES']")
    row.locator("input").fill("1")
    row.locator("button", has_text="Save").click()
    page.wait_for_selector("#set-body tr[data-setting='MAX_MESSAGES'][data-source='dashboard']")
    assert "Reset to environment" in page.locator("#set-body tr[data-setting='MAX_MESSAGES']").inner_text()
    with httpx.Client(base_url=running.url, headers=running.auth(), timeout=20) as http:
        two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        r = http.post("/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": two})
        assert r.status_code == 400 and "MAX_MESSAGES" in r.json()["error"]["message"]
    page.locator("#set-body tr[data-setting='MAX_MESSAGES']").locator("button", has_text="Reset to environment").click()
    page.wait_for_selector("#set-body tr[data-setting='MAX_MESSAGES'][data-source='default']")
    assert running.kl.settings.MAX_MESSAGES == 5000

    # -- the language switch, remembered across a reload
    page.click("#lang")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.text_content("nav a[href='#keys']") == "密钥"
    assert "今日请求" in page.inner_text("#overview")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.text_content("nav a[href='#keys']") == "密钥"
    shot(page, "dashboard-desktop-zh")
    page.click("#lang")
    assert page.text_content("nav a[href='#keys']") == "Keys"

    # -- the audit trail shows what was done
    audit = page.inner_text("#audit-body")
    assert "keys added" in audit and "setting changed" in audit and "setting reset" in audit

    # -- sign out: back to the login form, and the old session is gone on the server
    cookie = next(c["value"] for c in ctx.cookies() if c["name"] == "keyloom_session")
    page.click("#logout")
    page.wait_for_selector("#login-form")
    with httpx.Client(base_url=running.url, timeout=20) as http:
        assert http.get("/api/status", headers={"Cookie": f"keyloom_session={cookie}"}).status_code == 401
    assert errors == []
    ctx.close()


def test_dashboard_at_phone_width(browser, start_keyloom, fake):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, API_KEY_DAILY_LIMIT="20")
    traffic(running, fake)
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, locale="zh-CN")
    page = ctx.new_page()
    page.goto(running.url + "/")
    assert page.text_content("#login-button") == "登录"  # follows the browser's language
    shot(page, "login-phone")
    sign_in(page, running.url)
    assert page.text_content("nav a[href='#keys']") == "密钥"
    # nothing wider than the screen: tables turn into cards
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    assert page.locator("#keys-body tr").first.evaluate("e => getComputedStyle(e).display") == "block"
    shot(page, "dashboard-phone")
    page.click("#lang")
    shot(page, "dashboard-phone-en")
    ctx.close()
