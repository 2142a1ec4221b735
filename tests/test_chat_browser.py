"""The chat playground in a real headless Chromium: sign in, streaming, stop (the upstream call is
cancelled), parameters reaching the upstream request, regenerate, edit and continue, reload, rename,
search, export, delete; model output with HTML or script stays inert. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import PASSWORD
from tests.fake_gemini import Reply, stream_events, text_reply
from tests.support.browser import expect, shot

STORY = ("Once upon a time a llama walked across the high plains of the Andes looking for the best grass "
         "and it found a quiet valley where the wind was kind and the water was cold and clear.")
RICH = ("Here is a table:\n\n| animal | legs |\n|---|---|\n| llama | 4 |\n| duck | 2 |\n\nand some code:\n\n"
        "```python\nprint('hello, llama')\n```\n\nDone.")



def streamed(text, pieces=6, gap=0.25):
    return lambda rec: Reply(events=stream_events(text_reply(text), pieces), event_delay=gap)


def sign_in(page, url):
    page.goto(url + "/chat")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")


def last_user_text(rec):
    users = [c for c in rec.body["contents"] if c["role"] == "user"]
    return "".join(p.get("text", "") for p in users[-1]["parts"])


def test_chat_playground_end_to_end(browser, start_keyloom, fake):
    running = start_keyloom(FAKE_STREAMING="false")
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US", accept_downloads=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    sign_in(page, running.url)

    # -- a reply streams in, then is rendered as Markdown
    fake.responder = streamed(STORY)
    page.fill("#input", "Tell me a story")
    page.click("#send")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".msg.assistant .body")).to_contain_text("Once upon")  # part of it, while streaming
    assert page.locator("#stop").is_visible() and STORY not in page.inner_text(".msg.assistant .body")
    expect(page.locator(".msg.assistant .usage")).to_be_visible()
    assert page.inner_text(".msg.assistant .body").strip() == STORY
    expect(page.locator("#conv-list li")).to_have_count(1)
    assert page.inner_text("#conv-list li") == "Tell me a story"

    # -- parameters reach the upstream request
    page.click("#params-toggle")
    page.fill("#p-temperature", "0.3")
    page.fill("#p-top_p", "0.8")
    page.fill("#p-max_tokens", "123")
    page.fill("#p-system", "You are a llama.")
    fake.responder = lambda rec: Reply(body=text_reply(RICH))
    page.fill("#input", "Show me a table")
    page.click("#send")
    expect(page.locator(".msg.assistant table")).to_have_count(1)
    expect(page.locator(".msg.assistant pre .copy-code")).to_have_count(1)
    req = fake.generate_calls()[-1].body
    assert req["generationConfig"]["temperature"] == 0.3 and req["generationConfig"]["topP"] == 0.8
    assert req["generationConfig"]["maxOutputTokens"] == 123
    assert req["systemInstruction"]["parts"][0]["text"] == "You are a llama."
    shot(page, "chat-desktop")

    # -- stop a long reply: the upstream call is cancelled with it
    fake.responder = streamed(STORY * 3, pieces=12, gap=0.6)
    cancelled = fake.cancelled
    page.fill("#input", "A long one please")
    page.click("#send")
    expect(page.locator(".msg.assistant").last.locator(".body")).to_contain_text("Once")
    page.click("#stop")
    expect(page.locator(".msg.assistant").last).to_contain_text("Stopped.")
    deadline = time.monotonic() + 5
    while fake.cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.cancelled == cancelled + 1

    # -- regenerate the last reply
    fake.responder = lambda rec: Reply(body=text_reply("A regenerated answer."))
    calls = len(fake.generate_calls())
    page.locator(".regen-btn").click()
    expect(page.locator(".msg.assistant").last).to_contain_text("A regenerated answer.")
    assert len(fake.generate_calls()) == calls + 1
    assert last_user_text(fake.generate_calls()[-1]) == "A long one please"
    assert page.locator(".msg").count() == 6

    # -- edit the first message and continue from there
    fake.responder = lambda rec: Reply(body=text_reply("Edited branch answer."))
    page.locator(".msg.user").first.locator(".edit-btn").click()
    page.fill(".msg.user textarea.edit", "Tell me a poem instead")
    page.click(".save-edit")
    expect(page.locator(".msg.assistant").last).to_contain_text("Edited branch answer.")
    assert page.locator(".msg").count() == 2
    contents = fake.generate_calls()[-1].body["contents"]
    assert len(contents) == 1 and last_user_text(fake.generate_calls()[-1]) == "Tell me a poem instead"

    # -- reload: the conversation and its parameters are still there
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator(".msg")).to_have_count(2)
    assert page.input_value("#p-temperature") == "0.3" and page.input_value("#p-max_tokens") == "123"

    # -- rename, a second conversation, search
    page.fill("#title", "Llama poems")
    page.press("#title", "Enter")
    page.locator("#title").blur()
    expect(page.locator("#conv-list li.current")).to_have_text("Llama poems")
    page.click("#new-chat")
    fake.responder = lambda rec: Reply(body=text_reply("Otters hold hands."))
    page.fill("#input", "Tell me about otters")
    page.click("#send")
    expect(page.locator("#conv-list li")).to_have_count(2)
    page.fill("#search", "poem")
    expect(page.locator("#conv-list li")).to_have_count(1)
    expect(page.locator("#conv-list li")).to_have_text("Llama poems")
    page.fill("#search", "")
    expect(page.locator("#conv-list li")).to_have_count(2)

    # -- export, then delete
    page.locator("#conv-list li", has_text="Llama poems").click()
    expect(page.locator(".msg")).to_have_count(2)
    with page.expect_download() as dl:
        page.click("#export-json")
    exported = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
    assert exported["title"] == "Llama poems" and exported["messages"][0]["content"] == "Tell me a poem instead"
    with page.expect_download() as dl:
        page.click("#export-md")
    assert Path(dl.value.path()).read_text(encoding="utf-8").startswith("# Llama poems")
    page.click("#delete-conv")
    expect(page.locator("#conv-list li")).to_have_count(1)
    assert page.inner_text("#conv-list") == "Tell me about otters"
    assert errors == []
    ctx.close()


def test_stop_cancels_the_upstream_call_with_the_default_cache_and_fake_streaming(browser, start_keyloom, fake):
    """With the cache on, a client that hangs up does not cancel its call (the answer is kept); the
    playground's Stop asks for the cancellation explicitly (X-Keyloom-Cancel: on-close)."""
    running = start_keyloom(FAKE_STREAMING="true", CACHE_EXPIRY_TIME="600", FAKE_STREAMING_INTERVAL="0.2")
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    sign_in(page, running.url)
    fake.script.append(Reply(body=text_reply(STORY), delay=5.0))
    page.fill("#input", "slow please")
    page.click("#send")
    expect(page.locator("#stop")).to_be_visible()
    deadline = time.monotonic() + 5
    while not fake.generate_calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    page.click("#stop")
    expect(page.locator(".msg.assistant").last).to_contain_text("Stopped.")
    deadline = time.monotonic() + 5
    while fake.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.cancelled == 1 and len(running.kl.reuse) == 0
    page.close()


def test_model_output_stays_inert(browser, start_keyloom, fake):
    running = start_keyloom()
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, running.url)
    evil = ("<script>alert('script')</script>\n\n<img src=x onerror=\"alert('img')\">\n\n"
            "[click me](javascript:alert('link'))\n\n<b onmouseover=\"alert('b')\">raw html</b>\n\n"
            "<iframe src=\"javascript:alert('frame')\"></iframe>")
    fake.responder = lambda rec: Reply(body=text_reply(evil))
    page.fill("#input", "be evil")
    page.click("#send")
    expect(page.locator(".msg.assistant .usage")).to_be_visible()
    body = page.locator(".msg.assistant .body")
    expect(body).to_contain_text("<script>alert('script')</script>")  # shown as text
    assert body.locator("script, img, iframe, b").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    body.hover()
    page.locator(".msg.assistant .body p", has_text="raw html").hover()
    page.wait_for_timeout(300)
    assert dialogs == []
    page.reload()  # rendered again from the stored conversation: still inert
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_timeout(300)
    assert dialogs == [] and page.locator(".msg.assistant .body script").count() == 0
    page.close()


def test_chat_at_phone_width(browser, start_keyloom, fake):
    running = start_keyloom()
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, locale="zh-CN")
    page = ctx.new_page()
    sign_in(page, running.url)
    assert page.text_content("#send") == "发送"
    fake.responder = lambda rec: Reply(body=text_reply(RICH))
    page.fill("#input", "表格")
    page.click("#send")
    expect(page.locator(".msg.assistant table")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "chat-phone")
    # an attached image travels as a data URL and reaches Gemini as inline data
    import base64
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                           "AAAABJRU5ErkJggg==")
    page.set_input_files("#attach", files=[{"name": "dot.png", "mimeType": "image/png", "buffer": png}])
    expect(page.locator("#attachments img")).to_have_count(1)
    fake.responder = lambda rec: Reply(body=text_reply("A single dot."))
    page.fill("#input", "这是什么？")
    page.click("#send")
    expect(page.locator(".msg.assistant").last).to_contain_text("A single dot.")
    parts = fake.generate_calls()[-1].body["contents"][-1]["parts"]
    assert {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}} in parts
    expect(page.locator(".msg.user .thumbs img")).to_have_count(1)
    page.click("#side-open")
    expect(page.locator("#conv-list li")).to_have_count(1)
    ctx.close()
