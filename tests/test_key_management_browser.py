"""Key management and the Client keys section of the dashboard in a real headless Chromium (Debian's, driven by
Playwright): tags and notes on a key, filtering by tag, a key's 30 days when its row is opened, disabling by hand
with a note and re-enabling, removing the keys Google called invalid in one confirmed action; client keys listed
with today's use and a 30-day sparkline, created (the full key shown once, with a copy button), edited,
disabled, enabled and deleted, the ones from CLIENT_KEYS read-only. English and 中文, desktop and phone width
(390 px: nothing wider than the screen). Screenshots go to tests/artifacts/keys/.

The client-keys API is another part's work: when this Keyloom answers GET <api>/client-keys, the page is tested
against it; when it answers 404 (not there yet), against a small stub of the same contract, installed only in the
browser (Playwright route interception) by `ClientKeysStub` below."""
from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from server.redact import fingerprint
from tests.conftest import KEYS
from tests.support.browser import ARTIFACTS, expect, scroll_into_view

ADMIN = "admin-password-abcdefghij"
SHOTS = ARTIFACTS / "keys"
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LOCALES = {"en": "en-US", "zh": "zh-CN"}
FPS = [fingerprint(k) for k in KEYS]
CONFIG_KEY = "ck-config-friend-0123456789abcdef"  # a client key declared in CLIENT_KEYS
CLIENT_KEYS = json.dumps([{"name": "from-config", "key": CONFIG_KEY, "daily_requests": 50}])


def shot(page: Any, name: str, section: str = "#keys") -> str:
    """The section, not the whole page (the settings table makes a full page 8 000 px tall)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.locator(section).screenshot(path=str(path))
    return str(path)


def chat(running, n: int, key: str | None = None) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"} if key else running.auth()
    with httpx.Client(base_url=running.url, headers=headers, timeout=20) as http:
        return [http.post("/v1/chat/completions", json={"model": "gemini-2.5-flash",
                                                         "messages": [{"role": "user", "content": "hi"}]}).status_code
                for _ in range(n)]


def sign_in(page, url: str) -> None:
    page.goto(url + "/")
    page.fill("#password", ADMIN)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")


def no_overflow(page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{scroll} px wide on a {width} px screen"


class ClientKeysStub:
    """The client-keys admin API's contract, answered in the browser while the real one is not in this tree."""

    def __init__(self) -> None:
        days = [{"day": f"2025-06-{d:02d}", "requests": d % 7, "tokens": 40 * (d % 7)} for d in range(1, 31)]
        self.keys: list[dict[str, Any]] = [{
            "id": "cfg1", "name": "from-config", "prefix": CONFIG_KEY[:8], "daily_requests": 50, "daily_tokens": None,
            "rpm": None, "models": [], "expires": None, "enabled": True, "source": "config", "created_at": 0.0,
            "usage": {"today": {"requests": 3, "tokens": 120}, "days": days}}]
        self.n = 0

    def handle(self, route: Any, request: Any) -> None:
        path = request.url.split("/api/client-keys", 1)[1].split("?")[0]
        method = request.method
        body = json.loads(request.post_data) if request.post_data else {}
        if request.headers.get("x-csrf-token", "") == "" and method != "GET":
            return route.fulfill(status=403, json={"error": {"message": "csrf"}})
        if path == "" and method == "GET":
            return route.fulfill(json={"client_keys": self.keys})
        if path == "" and method == "POST":
            self.n += 1
            key = f"klc-stubbed-secret-{self.n:04d}-abcdefghijklmnop"
            entry = {"id": f"d{self.n}", "name": body["name"], "prefix": key[:8],
                     "daily_requests": body.get("daily_requests"), "daily_tokens": body.get("daily_tokens"),
                     "rpm": body.get("rpm"), "models": body.get("models", []), "expires": body.get("expires"),
                     "enabled": True, "source": "dashboard", "created_at": 1.0,
                     "usage": {"today": {"requests": 0, "tokens": 0}, "days": []}}
            self.keys.append(entry)
            return route.fulfill(status=201, json={**entry, "key": key})
        entry = next((k for k in self.keys if "/" + k["id"] == path), None)
        if entry is None:
            return route.fulfill(status=404, json={"error": {"message": "No such client key."}})
        if entry["source"] == "config":
            return route.fulfill(status=409, json={"error": {"message": "declared in CLIENT_KEYS"}})
        if method == "PUT":
            entry.update({k: v for k, v in body.items() if k in entry})
            return route.fulfill(json=entry)
        self.keys.remove(entry)
        return route.fulfill(json={"deleted": True})


@pytest.fixture
def running(start_keyloom, fake):
    r = start_keyloom(ADMIN_PASSWORD=ADMIN, API_KEY_DAILY_LIMIT="20", CLIENT_KEYS=CLIENT_KEYS)
    assert chat(r, 4) == [200] * 4
    fake.keys[KEYS[1]] = "invalid"  # the next request that picks it takes it out of rotation
    assert chat(r, 3) == [200] * 3
    assert r.kl.pool.get(FPS[1]).disabled_reason.startswith("InvalidKey")
    return r


def real_client_keys_api(running) -> bool:
    with httpx.Client(base_url=running.url, timeout=20, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        status = http.get("/api/client-keys").status_code
    assert status in (200, 404), status
    return status == 200


def open_page(browser, running, lang: str, phone: bool = False, api: str = "auto"):
    ctx = browser.new_context(locale=LOCALES[lang], **(PHONE if phone else DESKTOP))
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=running.url)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # the confirmations (remove invalid keys, delete a client key)
    stub = None
    real = real_client_keys_api(running)
    if api == "real" and not real:
        pytest.skip("this Keyloom has no client-keys API yet (GET /api/client-keys answers 404)")
    if api == "stub" or not real:
        stub = ClientKeysStub()
        page.route("**/api/client-keys**", stub.handle)
    sign_in(page, running.url)
    return ctx, page, errors, stub


def row(page, fp: str):
    return page.locator(f"#keys-body tr[data-fp='{fp}']")


def test_key_management_on_the_dashboard(browser, running):
    ctx, page, errors, _ = open_page(browser, running, "en")
    shots = []
    # -- open a key's row: its 30 days
    first = row(page, FPS[0])
    first.locator("button.key-open").click()
    detail = page.locator(f"tr.key-detail[data-detail-for='{FPS[0]}']")
    expect(detail.locator(".key-history-total")).to_contain_text("requests")
    assert detail.locator("svg.key-history rect.bar-ok").count() == 1  # all of it today
    expect(detail.locator(".key-history-total")).not_to_contain_text(" 0 requests")

    # -- tags and a note
    detail.locator(".key-tags-input").fill("team-a, paid")
    detail.locator(".key-note-input").fill("from Alice")
    detail.locator("button.key-meta-save").click()
    expect(first.locator(".badge.tag")).to_have_count(2)
    expect(first.locator(".key-note")).to_have_text("from Alice")
    shots.append(shot(page, "key-details-desktop-en"))
    row(page, FPS[2]).locator("button.key-open").click()  # one key open at a time
    expect(page.locator("tr.key-detail")).to_have_count(1)
    page.locator(f"tr.key-detail[data-detail-for='{FPS[2]}'] .key-tags-input").fill("backup")
    page.locator(f"tr.key-detail[data-detail-for='{FPS[2]}'] button.key-meta-save").click()
    expect(row(page, FPS[2]).locator(".badge.tag")).to_have_text("backup")

    # -- filter by tag
    expect(page.locator("#key-tag-label")).to_be_visible()
    assert page.locator("#key-tag option").all_text_contents() == ["all tags", "backup", "paid", "team-a"]
    page.select_option("#key-tag", "paid")
    expect(page.locator("#keys-body tr[data-fp]")).to_have_count(1)
    page.select_option("#key-tag", "")
    expect(page.locator("#keys-body tr[data-fp]")).to_have_count(3)

    # -- disable by hand with a note; the row says so; re-enable
    row(page, FPS[2]).locator("button.key-disable").click()
    page.fill("#disable-note", "lent to Bob until Friday")
    page.click("#disable-go")
    expect(row(page, FPS[2])).to_have_attribute("data-state", "disabled")
    expect(row(page, FPS[2])).to_contain_text("disabled by hand: lent to Bob until Friday")
    assert running.kl.pool.get(FPS[2]).disabled_reason.startswith("Disabled by hand")

    # -- remove the key Google called invalid: one button, confirmed
    expect(page.locator("#remove-invalid")).to_have_text("Remove invalid keys (1)")
    shots.append(shot(page, "key-management-desktop-en"))
    page.click("#remove-invalid")
    expect(row(page, FPS[1])).to_have_count(0)
    expect(page.locator("#remove-invalid")).to_be_hidden()
    assert running.kl.pool.get(FPS[1]) is None

    row(page, FPS[2]).locator("button", has_text="Re-enable").click()
    expect(row(page, FPS[2])).to_have_attribute("data-state", "active")
    audit = page.locator("#audit-body")
    for action in ("key tags/note changed", "key disabled by hand", "invalid keys removed", "key re-enabled"):
        expect(audit).to_contain_text(action)

    # -- 中文
    page.click("#lang")
    expect(row(page, FPS[0]).locator("button.key-disable")).to_have_text("停用")
    expect(page.locator("#audit-body")).to_contain_text("移除无效密钥")
    row(page, FPS[0]).locator("button.key-open").click()
    expect(page.locator("tr.key-detail .key-history-total")).to_contain_text("30 天内")
    shots.append(shot(page, "key-management-desktop-zh"))
    html = page.content()
    assert not [k for k in KEYS if k in html]
    assert errors == []
    ctx.close()
    print("screenshots:", *shots, sep="\n  ")


@pytest.mark.parametrize("api", ["real", "stub"])
def test_client_keys_section(browser, running, api):
    """Against the real API when this tree has it (skipped otherwise), and always against the contract's stub."""
    ctx, page, errors, stub = open_page(browser, running, "en", api=api)
    section = page.locator("#client-keys")
    expect(section).to_be_visible()
    expect(page.locator("#nav-client-keys")).to_be_visible()
    config = page.locator("#ck-body tr[data-source='config']")
    expect(config).to_contain_text("from CLIENT_KEYS")
    expect(config).to_contain_text("read-only")
    assert config.locator("button").count() == 0
    assert CONFIG_KEY[:8] in config.inner_text() and CONFIG_KEY not in page.content()

    # -- create: the key is shown once, with a copy button
    page.click("#ck-create summary")
    form = page.locator("#ck-create-form")
    form.locator("input[name='name']").fill("alice-laptop")
    form.locator("input[name='daily_requests']").fill("100")
    form.locator("input[name='models']").fill("gemini-2.5-*")
    form.locator("button[type='submit']").click()
    expect(page.locator("#ck-created")).to_be_visible()
    expect(page.locator("#ck-created")).to_contain_text("will not be shown again")
    secret = page.text_content("#ck-created-key")
    assert secret and len(secret) >= 16
    page.click("#ck-copy")
    expect(page.locator("#toast")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    created = page.locator("#ck-body tr[data-source='dashboard']")
    expect(created).to_contain_text("alice-laptop")
    expect(created).to_contain_text("100 requests/day")
    expect(created).to_contain_text("gemini-2.5-*")
    expect(created).to_contain_text(secret[:8])
    if stub is None:  # the real API: a request with the new key shows up as today's use
        assert chat(running, 1, secret) == [200]
        expect(created.locator(".ck-today")).to_contain_text("1 / 100", timeout=15000)
    shot(page, f"client-keys-created-desktop-en-{api}", "#client-keys")
    page.click("#ck-created-close")
    expect(page.locator("#ck-created")).to_be_hidden()
    assert secret not in page.content()  # gone from the page once dismissed

    # -- edit limits, models, expiry
    created.locator("button.ck-edit").click()
    dialog = page.locator("#ck-edit-dialog")
    expect(dialog.locator("input[name='name']")).to_have_value("alice-laptop")
    dialog.locator("input[name='rpm']").fill("10")
    dialog.locator("input[name='expires']").fill("2099-12-31")
    dialog.locator("button[type='submit']").click()
    expect(dialog).to_be_hidden()
    expect(created).to_contain_text("10 per minute")
    expect(created).to_contain_text("expires after 2099-12-31")

    # -- disable, enable
    created.locator("button.ck-toggle").click()
    expect(created).to_have_attribute("data-state", "disabled")
    if stub is None:
        assert chat(running, 1, secret)[0] in (401, 403)
    created.locator("button.ck-toggle").click()
    expect(created).to_have_attribute("data-state", "enabled")
    assert config.locator("svg.ck-spark").count() == 1
    shot(page, f"client-keys-desktop-en-{api}", "#client-keys")

    # -- 中文
    page.click("#lang")
    expect(page.locator("#client-keys h2")).to_have_text("客户端密钥")
    expect(config).to_contain_text("来自 CLIENT_KEYS")
    expect(created.locator("button.ck-delete")).to_have_text("删除")
    expect(page.locator("#ck-create-form label").first).to_contain_text("名称")  # the form's labels follow
    shot(page, f"client-keys-desktop-zh-{api}", "#client-keys")

    # -- delete, confirmed
    created.locator("button.ck-delete").click()
    expect(page.locator("#ck-body tr[data-source='dashboard']")).to_have_count(0)
    if stub is None:
        assert chat(running, 1, secret)[0] in (401, 403)
        audit = page.locator("#audit-body")
        expect(audit).to_contain_text("创建客户端密钥")
    assert errors == []
    ctx.close()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_key_management_and_client_keys_at_phone_width(browser, running, lang):
    ctx, page, errors, _ = open_page(browser, running, lang, phone=True)
    row(page, FPS[0]).locator("button.key-open").click()
    detail = page.locator(f"tr.key-detail[data-detail-for='{FPS[0]}']")
    detail.locator(".key-tags-input").fill("phone, test")
    detail.locator("button.key-meta-save").click()
    expect(row(page, FPS[0]).locator(".badge.tag")).to_have_count(2)
    expect(detail.locator("svg.key-history rect.bar-ok")).to_have_count(1)
    expect(row(page, FPS[0])).to_have_css("display", "block")  # tables become cards
    no_overflow(page, 390)
    scroll_into_view(detail)
    page.screenshot(path=str(SHOTS / f"key-details-phone-{lang}.png"))
    page.click("#ck-create summary")
    page.fill("#ck-create-form input[name='name']", "phone-app")
    page.click("#ck-create-form button[type='submit']")
    expect(page.locator("#ck-created")).to_be_visible()
    no_overflow(page, 390)
    section = page.locator("#client-keys")
    section.scroll_into_view_if_needed()
    expect(page.locator("#ck-body tr").first).to_have_css("display", "block")
    section.screenshot(path=str(SHOTS / f"client-keys-phone-{lang}.png"))
    page.click("#ck-created-close")
    page.locator("#ck-body tr[data-source='dashboard'] button.ck-edit").click()
    expect(page.locator("#ck-edit-dialog")).to_be_visible()
    no_overflow(page, 390)
    dialog_box = page.locator("#ck-edit-dialog").bounding_box()
    assert dialog_box is not None and dialog_box["x"] >= 0 and dialog_box["x"] + dialog_box["width"] <= 390
    page.screenshot(path=str(SHOTS / f"client-key-edit-phone-{lang}.png"))
    assert re.search(r"Client keys|客户端密钥", page.inner_text("#client-keys h2"))
    assert errors == []
    ctx.close()


def test_recent_requests_name_the_client_key(browser, running):
    """The request log says which client key made a request; the owner's own requests name none."""
    assert chat(running, 1, CONFIG_KEY) == [200] and chat(running, 1) == [200]
    running.loop.run(running.kl.flusher.flush())
    for lang, label in (("en", "client key from-config"), ("zh", "客户端密钥 from-config")):
        context = browser.new_context(locale=LOCALES[lang], **DESKTOP)
        page = context.new_page()
        sign_in(page, running.url)
        rows = page.locator("#req-body tr:not(.error-row)")
        expect(rows.filter(has_text=label)).to_have_count(1)
        expect(rows.nth(1)).to_contain_text(label)  # newest first: the owner's request, then the friend's
        assert "from-config" not in rows.nth(0).inner_text()
        context.close()
