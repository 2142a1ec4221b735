"""Every page in Chromium, in both languages, at desktop (1280) and phone (390) width: the settings table's
layout and what it says is in force, the quota-reset wording, links between the dashboard and /chat, signing
out of /chat, what the pages say when there are no keys, chart labels readable on a phone, and the offline
demo's Markdown rendered in the playground. Screenshots of every page go to tests/artifacts/pages/."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from server.admin.sessions import CHAT_COOKIE, COOKIE
from server.app import Keyloom
from server.auth import PASSWORD_FILE, load_or_create_password
from server.demo import DEMO_KEYS, _answer, start_demo_upstream
from server.settings import Settings
from tests.conftest import PASSWORD, keyloom_env
from tests.support.browser import ARTIFACTS, README_SHOTS, expect, scroll_into_view

ADMIN = "admin-password-abcdefghij"
PAGES = ARTIFACTS / "pages"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LOCALES = {"en": "en-US", "zh": "zh-CN"}



@pytest.fixture(scope="module")
def demo_url(loop_thread):
    """The simulated Gemini of `run.py --demo`, on a loopback port."""
    url, server = loop_thread.run(start_demo_upstream())
    yield url

    async def stop() -> None:
        server.stop()
    loop_thread.run(stop())


def context(browser, lang: str, phone: bool = False):
    return browser.new_context(locale=LOCALES[lang], **(PHONE if phone else DESKTOP))


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def dashboard_sign_in(page, url: str, password: str = ADMIN, path: str = "/") -> None:
    page.goto(url + path)
    page.fill("#password", password)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")


def chat_sign_in(page, url: str) -> None:
    page.goto(url + "/chat")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")


def no_horizontal_overflow(page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url}: {scroll} px wide on a {width} px screen"


def box(locator) -> dict[str, float]:
    b = locator.bounding_box()
    assert b is not None
    return b


def demo_traffic(url: str, n: int = 3) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {PASSWORD}"}, timeout=20) as http:
        for i in range(n):
            r = http.post("/v1/chat/completions", json={"model": "gemini-2.0-flash",
                                                         "messages": [{"role": "user", "content": f"hi {i}"}]})
            assert r.status_code == 200, r.text


# -- the settings table -------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_settings_save_button_sits_in_its_row_under_a_header(browser, start_keyloom, phone):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "en", phone)
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    row = page.locator("#set-body tr[data-setting='MAX_MESSAGES']")
    save = row.locator("button", has_text="Save")
    scroll_into_view(row)
    r, b = box(row), box(save)
    assert r["y"] - 0.5 <= b["y"] and b["y"] + b["height"] <= r["y"] + r["height"] + 0.5, (r, b)
    if not phone:
        # the cell is a table cell like the others: its box spans the row, and the button is level with the input
        cell = box(row.locator("td").nth(3))
        assert abs(cell["y"] - r["y"]) <= 1 and abs(cell["y"] + cell["height"] - r["y"] - r["height"]) <= 1, (r, cell)
        assert row.locator("td").nth(3).evaluate("e => getComputedStyle(e).display") == "table-cell"
        i = box(row.locator("input"))
        assert abs(b["y"] - i["y"]) <= 2, (i, b)
        heads = page.locator(".set-table thead th")
        assert heads.count() == 4
        assert heads.nth(3).inner_text().strip() == "Change"
        assert box(heads.nth(3))["width"] > 0
    else:
        no_horizontal_overflow(page, 390)
        # rows that cannot be changed here leave no empty, labelled line behind
        fixed = page.locator("#set-body tr[data-setting='PORT'] td.set-actions-cell")
        assert fixed.evaluate("e => getComputedStyle(e).display") == "none"
    ctx.close()


def test_settings_say_what_is_in_force_when_generated_or_resolved(browser, loop_thread, fake, tmp_path):
    """PASSWORD and the admin password generated into DATA_DIR, DATA_DIR resolved at start: the table shows
    those, not "(empty)"."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = keyloom_env(fake, data_dir)
    for unset in ("PASSWORD", "DATA_DIR"):
        del env[unset]
    settings = Settings.from_env(env)
    password, _ = load_or_create_password("", data_dir)  # as server/main.py does

    async def boot() -> Keyloom:
        kl = Keyloom(settings, password=password, data_dir=data_dir)
        await kl.start(port=0)
        return kl

    kl = loop_thread.run(boot())
    try:
        url = f"http://127.0.0.1:{kl.port}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {kl.admin_password}"}) as http:
            shown = {s["name"]: s for s in http.get("/api/settings").json()["settings"]}
        assert shown["PASSWORD"]["value"] == f"(generated, kept in {data_dir / PASSWORD_FILE})"
        assert shown["PASSWORD"]["source"] == "generated"
        assert shown["ADMIN_PASSWORD"]["value"] == f"(generated, kept in {data_dir / 'admin_password'})"
        assert shown["ADMIN_PASSWORD"]["source"] == "generated"
        assert shown["DATA_DIR"]["value"] == str(data_dir) and shown["DATA_DIR"]["source"] == "default"
        assert shown["DATA_DIR"]["resolved"] is True
        assert password not in str(shown) and kl.admin_password not in str(shown)

        badges = (("en", "generated", "default (resolved)"), ("zh", "自动生成", "默认值（已解析）"))
        for lang, generated, resolved in badges:
            ctx = context(browser, lang)
            page = ctx.new_page()
            dashboard_sign_in(page, url, kl.admin_password)
            for name in ("PASSWORD", "ADMIN_PASSWORD"):
                row = page.locator(f"#set-body tr[data-setting='{name}']")
                expect(row.locator("td").nth(1)).to_contain_text(str(data_dir))
                assert row.locator("td").nth(2).locator(".badge").inner_text() == generated
            row = page.locator("#set-body tr[data-setting='DATA_DIR']")
            assert row.locator("code.ro").inner_text() == str(data_dir)
            assert row.locator("td").nth(2).locator(".badge").inner_text() == resolved
            for name in ("PASSWORD", "ADMIN_PASSWORD", "DATA_DIR"):
                text = page.locator(f"#set-body tr[data-setting='{name}'] td").nth(1).inner_text()
                assert "(empty)" not in text and "（空）" not in text
            ctx.close()
    finally:
        loop_thread.run(kl.stop(0))


def test_admin_password_taken_from_web_password_says_so(start_keyloom):
    running = start_keyloom(WEB_PASSWORD=ADMIN)
    with running.http(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        shown = {s["name"]: s for s in http.get("/api/settings").json()["settings"]}
    assert shown["ADMIN_PASSWORD"]["value"] == "(set, from WEB_PASSWORD)"
    assert shown["ADMIN_PASSWORD"]["source"] == "environment" and shown["ADMIN_PASSWORD"]["from"] == "WEB_PASSWORD"
    assert shown["WEB_PASSWORD"]["value"] == "(set)"


# -- the quota-reset card -----------------------------------------------------------------------------


def test_quota_reset_card_pairs_each_time_with_its_own_zone(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, TZ="Asia/Shanghai", QUOTA_RESET_TZ="America/Los_Angeles")
    with running.http(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        svc = http.get("/api/status").json()["service"]
    reset = svc["quota_reset_at"]
    there = datetime.fromtimestamp(reset, ZoneInfo("America/Los_Angeles"))
    here = datetime.fromtimestamp(reset, ZoneInfo("Asia/Shanghai"))
    abbr = there.strftime("%Z")
    assert abbr in ("PST", "PDT") and there.strftime("%H:%M") == "00:00"
    assert svc["quota_reset_abbr"] == abbr and svc["quota_reset_local"] == here.strftime("%Y-%m-%d %H:%M")
    assert svc["quota_reset_text"] == f"{here:%Y-%m-%d %H:%M} Asia/Shanghai (00:00 America/Los_Angeles, {abbr})"
    wanted = {"en": f"at {here:%Y-%m-%d %H:%M} Asia/Shanghai, midnight in America/Los_Angeles ({abbr})",
              "zh": f"于 {here:%Y-%m-%d %H:%M}（Asia/Shanghai），即 America/Los_Angeles 午夜（{abbr}）"}
    for lang, text in wanted.items():
        ctx = context(browser, lang)
        page = ctx.new_page()
        dashboard_sign_in(page, running.url)
        sub = page.inner_text("#svc-reset-sub")
        assert sub == text
        assert "CST" not in sub
        ctx.close()


def test_quota_reset_card_when_both_zones_are_one(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, TZ="America/Los_Angeles", QUOTA_RESET_TZ="America/Los_Angeles")
    with running.http(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        svc = http.get("/api/status").json()["service"]
    local, abbr = svc["quota_reset_local"], svc["quota_reset_abbr"]
    assert local.endswith(" 00:00") and abbr in ("PST", "PDT")
    assert svc["quota_reset_text"] == f"{local} America/Los_Angeles ({abbr})"
    ctx = context(browser, "en")
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    assert page.inner_text("#svc-reset-sub") == f"at midnight, {local} America/Los_Angeles ({abbr})"
    ctx.close()


def test_a_zone_without_an_abbreviation_gets_its_offset(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, QUOTA_RESET_TZ="America/Sao_Paulo")
    with running.http(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        svc = http.get("/api/status").json()["service"]
    assert svc["quota_reset_abbr"] == "UTC-03" and svc["quota_reset_tz"] == "America/Sao_Paulo"


# -- links between the pages, and signing out of /chat ------------------------------------------------


def test_dashboard_and_chat_link_to_each_other(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "en")
    page = ctx.new_page()
    errors = watch_errors(page)
    dashboard_sign_in(page, running.url)
    link = page.locator("a#to-chat")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == "/chat"
    link.click()
    page.wait_for_url(running.url + "/chat")
    page.wait_for_selector("body[data-ready='1']")  # the dashboard session also opens /chat
    back = page.locator("a#to-dashboard")
    expect(back).to_be_visible()
    assert back.get_attribute("href") == "/"
    back.click()
    page.wait_for_selector("#keys-body")
    # the login pages point at each other too
    ctx.clear_cookies()
    page.goto(running.url + "/chat")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.locator("a#to-dashboard").get_attribute("href") == "/"
    page.goto(running.url + "/")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.locator("a#to-chat").get_attribute("href") == "/chat"
    assert errors == []
    ctx.close()


def test_chat_links_to_a_dashboard_at_its_own_path(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, DASHBOARD_PATH="/admin")
    ctx = context(browser, "en")
    page = ctx.new_page()
    page.goto(running.url + "/chat")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.locator("a#to-dashboard").get_attribute("href") == "/"  # not known yet: the site root
    dashboard_sign_in(page, running.url, path="/admin/")
    assert page.locator("a#to-chat").get_attribute("href") == "/chat"
    chat_sign_in(page, running.url)  # the dashboard's cookie is scoped to /admin/: /chat asks for PASSWORD
    assert page.locator("a#to-dashboard").get_attribute("href") == "/admin/"
    page.click("a#to-dashboard")
    page.wait_for_selector("#keys-body")
    ctx.close()


def test_chat_sign_out_ends_the_session(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    for phone in (False, True):
        ctx = context(browser, "en", phone)
        page = ctx.new_page()
        errors = watch_errors(page)
        chat_sign_in(page, running.url)
        cookie = next(c["value"] for c in ctx.cookies() if c["name"] == CHAT_COOKIE)
        if phone:
            page.click("#side-open")
        expect(page.locator("#chat-logout")).to_be_visible()
        page.click("#chat-logout")
        expect(page.locator("#login-form")).to_be_visible()
        assert not [c for c in ctx.cookies() if c["name"] == CHAT_COOKIE]
        with running.http(headers={"Cookie": f"{CHAT_COOKIE}={cookie}"}) as http:
            assert http.get("/chat/session").status_code == 401
            assert http.get("/api/conversations").status_code == 401
            assert "login-form" in http.get("/chat").text
        assert errors == []
        ctx.close()


def test_chat_sign_out_when_in_through_the_dashboard_session(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "zh")
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    cookie = next(c["value"] for c in ctx.cookies() if c["name"] == COOKIE)
    page.goto(running.url + "/chat")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#chat-logout") == "退出登录"
    page.click("#chat-logout")
    expect(page.locator("#login-form")).to_be_visible()
    with running.http(headers={"Cookie": f"{COOKIE}={cookie}"}) as http:
        assert http.get("/api/status").status_code == 401
        assert http.get("/chat/session").status_code == 401
    ctx.close()


# -- no keys ------------------------------------------------------------------------------------------


def test_with_no_keys_both_pages_say_how_to_add_them(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, GEMINI_API_KEYS="")
    for lang, words in (("en", ("Add keys", "GEMINI_API_KEYS")), ("zh", ("添加密钥", "GEMINI_API_KEYS"))):
        ctx = context(browser, lang)
        page = ctx.new_page()
        errors = watch_errors(page)
        dashboard_sign_in(page, running.url)
        empty = page.locator("#keys-empty")
        expect(empty).to_be_visible()
        for w in words:
            assert w in empty.inner_text()
        assert "No key matches" not in empty.inner_text()
        assert page.locator("#add-keys").get_attribute("open") is not None  # the form is there to use
        empty.scroll_into_view_if_needed()
        snap(page, f"dashboard-no-keys-{lang}-desktop")

        page.goto(running.url + "/chat")
        page.wait_for_selector("body[data-ready='1']")
        notice = page.locator("#no-models")
        expect(notice).to_be_visible()
        for w in words:
            assert w in notice.inner_text()
        assert notice.locator("a[href='/']").count() == 1
        snap(page, f"chat-no-keys-{lang}-desktop")
        expect(page.locator("#send")).to_be_disabled()
        completions: list[str] = []

        def seen(r: Any, out: list[str] = completions) -> None:
            if "/v1/chat/completions" in r.url:
                out.append(r.url)
        page.on("request", seen)
        page.fill("#input", "hello?")
        page.press("#input", "Enter")
        expect(page.locator("#toast")).to_contain_text("GEMINI_API_KEYS")
        assert completions == []
        assert "model is required" not in page.inner_text("body")
        assert errors == []
        ctx.close()


def test_a_filter_that_matches_no_key_still_says_so(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "en")
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    expect(page.locator("#keys-empty")).to_be_hidden()
    page.select_option("#key-filter", "disabled")
    expect(page.locator("#keys-empty")).to_have_text("No key matches.")
    assert page.locator("#add-keys").get_attribute("open") is None
    ctx.close()


# -- charts on a phone --------------------------------------------------------------------------------

EFFECTIVE_FONT = """svg => [...svg.querySelectorAll('text')].map(t =>
  parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)"""
LABEL_PROBLEMS = """svg => {
  const frame = svg.getBoundingClientRect();
  const boxes = [...svg.querySelectorAll('text.x-label')].map(t => t.getBoundingClientRect());
  const out = [];
  boxes.forEach((b, i) => {
    if (i && b.left < boxes[i - 1].right) out.push('overlap ' + i);
    if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5) out.push('cut ' + i);
  });
  return boxes.length < 5 ? ['only ' + boxes.length + ' labels'] : out;
}"""


@pytest.mark.parametrize("phone", [True, False], ids=["phone", "desktop"])
def test_chart_labels_are_readable(browser, start_keyloom, phone):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "en", phone)
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    for chart in ("#chart-minutes", "#chart-days"):
        svg = page.locator(chart)
        sizes = svg.evaluate(EFFECTIVE_FONT)
        assert len(sizes) >= 7 and min(sizes) >= 10, (chart, sizes)
        assert svg.evaluate(LABEL_PROBLEMS) == [], chart
    if phone:
        no_horizontal_overflow(page, 390)
    ctx.close()


def test_charts_redraw_for_a_new_width(browser, start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    ctx = context(browser, "en")
    page = ctx.new_page()
    dashboard_sign_in(page, running.url)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function(f"() => Math.min(...({EFFECTIVE_FONT})(document.querySelector('#chart-days'))) >= 10")
    ctx.close()


# -- the offline demo's Markdown in the playground ----------------------------------------------------


def test_demo_reply_is_markdown_that_quotes_the_user():
    body = {"contents": [{"role": "user", "parts": [{"text": "first line\nsecond  line"}]}]}
    text, thought = _answer(body)
    assert "first line second line" in text and "demo" in text and thought is None  # one line: the quote holds
    assert text.startswith("### ")
    for mark in ("**", "\n- ", "\n|---|---|\n", "\n```bash\n"):
        assert mark in text, mark


def test_demo_reply_shows_markdown_rendered(browser, start_keyloom, demo_url):
    running = start_keyloom(GEMINI_BASE_URL=demo_url, GEMINI_API_KEYS=",".join(DEMO_KEYS))
    ctx = context(browser, "en")
    page = ctx.new_page()
    errors = watch_errors(page)
    chat_sign_in(page, running.url)
    page.fill("#input", "show me what you can do")
    page.click("#send")
    reply = page.locator(".msg.assistant .body")
    expect(page.locator(".msg.assistant .usage")).to_be_visible()
    expect(reply.locator("h3")).to_have_count(1)
    assert reply.locator("strong").count() >= 1
    assert reply.locator("ul li").count() >= 2
    assert reply.locator("table tbody tr").count() >= 2
    assert reply.locator("pre code").count() == 1
    text = reply.inner_text()
    assert "show me what you can do" in text and "demo" in text
    assert errors == []
    ctx.close()


# -- every page, both languages, both widths ----------------------------------------------------------


def snap(page, name: str, full: bool = False) -> Path:
    PAGES.mkdir(parents=True, exist_ok=True)
    path = PAGES / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def update_readme_shot(page, name: str) -> None:
    """KEYLOOM_UPDATE_SCREENSHOTS=1 refreshes the README's chat pictures (same file names; the dashboard's come
    from test_dashboard_browser.py, whose scripted traffic shows more key states)."""
    if os.environ.get("KEYLOOM_UPDATE_SCREENSHOTS"):
        README_SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(README_SHOTS / f"{name}.png"))


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_every_page_in_both_languages(browser, start_keyloom, demo_url, lang, phone):
    """Login, dashboard, chat login, chat: each shown without errors, nothing wider than the screen, the texts
    of the right language; a screenshot of each for a person to judge."""
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, GEMINI_BASE_URL=demo_url, GEMINI_API_KEYS=",".join(DEMO_KEYS),
                            API_KEY_DAILY_LIMIT="50")
    demo_traffic(running.url)
    width = 390 if phone else 1280
    tag = f"{lang}-{'phone' if phone else 'desktop'}"
    ctx = context(browser, lang, phone)
    page = ctx.new_page()
    errors = watch_errors(page)
    zh = lang == "zh"

    page.goto(running.url + "/")
    expect(page.locator("#login-button")).to_have_text("登录" if zh else "Sign in")
    no_horizontal_overflow(page, width)
    snap(page, f"login-{tag}")

    dashboard_sign_in(page, running.url)
    expect(page.locator("nav a[href='#keys']")).to_have_text("密钥" if zh else "Keys")
    expect(page.locator("#keys-body tr")).to_have_count(3)
    no_horizontal_overflow(page, width)
    snap(page, f"dashboard-{tag}")
    snap(page, f"dashboard-{tag}-full", full=True)

    chat = ctx.new_page()
    chat_errors = watch_errors(chat)
    chat.goto(running.url + "/chat")
    chat.wait_for_selector("body[data-ready='1']")  # the dashboard session opens /chat
    if phone:
        chat.click("#side-open")  # on a phone the links and "Sign out" are in the side menu
    chat.click("#chat-logout")
    expect(chat.locator("#login-form")).to_be_visible()
    expect(chat.locator("#login-button")).to_have_text("登录" if zh else "Sign in")
    no_horizontal_overflow(chat, width)
    snap(chat, f"chat-login-{tag}")

    chat_sign_in(chat, running.url)
    chat.fill("#input", "用一个表格介绍你自己" if zh else "Introduce yourself with a table")
    chat.click("#send")
    expect(chat.locator(".msg.assistant .usage")).to_be_visible()
    expect(chat.locator(".msg.assistant .body table")).to_have_count(1)
    expect(chat.locator("#send")).to_have_text("发送" if zh else "Send")
    no_horizontal_overflow(chat, width)
    chat.locator(".msg.user").scroll_into_view_if_needed()
    snap(chat, f"chat-{tag}")
    if not phone and lang == "en":
        update_readme_shot(chat, "chat-desktop")
    if phone and lang == "zh":
        update_readme_shot(chat, "chat-phone")
    if phone:
        chat.click("#side-open")
        chat.wait_for_function("() => document.getElementById('side').getBoundingClientRect().left === 0")  # slid in
        expect(chat.locator("#chat-logout")).to_be_in_viewport()
        snap(chat, f"chat-{tag}-menu")
    assert errors == [] and chat_errors == []
    ctx.close()
