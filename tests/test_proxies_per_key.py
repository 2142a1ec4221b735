"""UPSTREAM_PROXIES: each key always leaves through its own proxy (rendezvous hashing of its fingerprint), over
real proxies on loopback (an HTTP CONNECT proxy and a SOCKS5 server, tests/support/proxies.py) to a fake Gemini
over TLS. Which proxy carried a request is read from the connection itself: each proxy connects to the fake from a
loopback address of its own, the fake records the caller's address and the key of every request.

Checked: every key through its proxy, on the API and in the key test; few keys move when a proxy is added; a proxy
that is down rests (injected clock) while its keys take their next proxy, the key not blamed, and they go home
when it is back; SOCKS5 with credentials (socks5 and socks5h), TLS to the origin inside the tunnel; the dashboard
shows each key's proxy and each proxy's health; the passwords are never in the dashboard payload or the logs."""
from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import openai
import pytest
import trustme

from server.clock import ManualClock, SystemClock
from server.redact import fingerprint
from server.settings import Settings, SettingsError
from server.upstream.egress import REST_BASE, Egress
from server.upstream.http import HttpClient
from tests.conftest import make_key
from tests.fake_gemini import make_service_account
from tests.support.admin import AdminClient
from tests.support.proxies import HttpConnectProxy, Socks5Proxy, _Forwarder
from tests.support.wait import wait_until
from tests.test_tls_proxy import tls_fake

USER = "loom user"
SECRET = "s0cks:p@ss/w0rd#9"  # characters that must be percent-encoded in a URL
OTHER_SECRET = "http-pr0xy-secret-42"
HI = [{"role": "user", "content": "hello egress"}]
MANY_KEYS = [make_key(i) for i in range(100, 130)]


def with_credentials(url: str, user: str, password: str) -> str:
    scheme, _, authority = url.partition("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{authority}"


def never_shown(text: str, *passwords: str) -> None:
    for password in passwords:
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        for form in (password, quote(password, safe=""), token):
            assert form not in text


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca, tmp_path, monkeypatch):
    """Keyloom trusts the test CA through SSL_CERT_FILE, as an operator makes it trust a private one."""
    path = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture
def google(loop_thread, ca, trusted):
    """A fake Gemini over TLS (https://localhost:port) that accepts any key."""
    fake, _ = loop_thread.run(tls_fake(ca))
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def proxies(loop_thread):
    started: list[_Forwarder] = []

    def start(kind: type[_Forwarder], user: str | None = None, password: str | None = None) -> _Forwarder:
        proxy = kind(user, password)
        loop_thread.run(proxy.start())
        started.append(proxy)
        return proxy

    yield start
    for p in started:
        loop_thread.run(p.stop())


def carrier(rec, proxies: list[_Forwarder]) -> _Forwarder:
    """The one proxy whose connection to the fake carried this request."""
    found = [p for p in proxies if rec.peer is not None and rec.peer[0] == p.source]
    assert len(found) == 1, (rec.peer, [p.source for p in proxies])
    return found[0]


def home_of(kl, key: str, proxies: list[_Forwarder]) -> _Forwarder:
    """The test proxy that is `key`'s first choice (UPSTREAM_PROXIES lists them in the order of `proxies`)."""
    return proxies[kl.egress.home(fingerprint(key)).n - 1]


def dashboard(running, path: str = "status"):
    """An admin API read with the admin password as a Bearer token (a session cookie would carry the injected
    clock's expiry, which an HTTP client may judge against its own)."""
    with running.http(headers={"Authorization": f"Bearer {running.kl.admin_password}"}) as http:
        r = http.get(f"/api/{path}")
    assert r.status_code == 200, r.text
    return r


def chat(running) -> None:
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert out.choices[0].message.content == "Echo: hello egress"


# -- every key through its proxy ---------------------------------------------------------------------------------

def test_every_key_always_leaves_through_its_own_proxy(start_keyloom, google, proxies, caplog):
    caplog.set_level(logging.DEBUG)
    a = proxies(HttpConnectProxy)
    b = proxies(HttpConnectProxy, USER, OTHER_SECRET)
    c = proxies(Socks5Proxy, USER, SECRET)
    order = [a, b, c]
    urls = [a.url, with_credentials(b.url, USER, OTHER_SECRET), with_credentials(c.url, USER, SECRET)]
    running = start_keyloom(GEMINI_BASE_URL=google.base_url, GEMINI_API_KEYS=",".join(MANY_KEYS),
                            UPSTREAM_PROXIES=" ".join(urls))
    kl = running.kl
    homes = {k: home_of(kl, k, order) for k in MANY_KEYS}
    assert {id(p) for p in homes.values()} == {id(p) for p in order}  # 30 keys spread over the three

    google.requests.clear()
    for _ in range(2 * len(MANY_KEYS)):  # least-used first: every key twice
        chat(running)
    admin = AdminClient(running.url, kl.admin_password)
    job = admin.test_keys()  # one model-list call per key, through its proxy too
    assert all(r["ok"] for r in job["results"]), job

    seen: dict[str, int] = {}
    for rec in google.requests:
        assert rec.key in homes, rec.key
        assert carrier(rec, order) is homes[rec.key], f"a request of {rec.key[-8:]} left through another proxy"
        seen[rec.key] = seen.get(rec.key, 0) + 1
    assert set(seen) == set(MANY_KEYS) and all(n >= 3 for n in seen.values())
    assert a.refused == b.refused == c.refused == 0
    # TLS to the origin inside every tunnel (the name as the HTTP proxies see it; socks5:// is given the address)
    assert {t[0] for p in (a, b) for t in p.tunnels} == {"localhost"} and {t[0] for t in c.tunnels} == {"127.0.0.1"}

    status = admin.ok("GET", "status")
    rows = {r["fp"]: r for r in status["keys"]}
    for key, proxy in homes.items():
        shown = rows[fingerprint(key)]["proxy"]
        assert shown["url"] == f"{proxy.scheme}://127.0.0.1:{proxy.port}" and shown["n"] == shown["home"]
        assert rows[fingerprint(key)]["state"] != "resting"
    panel = status["proxies"]
    assert [p["url"] for p in panel] == [f"{p.scheme}://127.0.0.1:{p.port}" for p in order]
    assert all(p["state"] == "ok" and p["until"] is None for p in panel)
    assert sum(p["keys"] for p in panel) == len(MANY_KEYS)
    shown_text = json.dumps(status) + admin.get("settings").text + admin.get("requests").text
    never_shown(shown_text + caplog.text, SECRET, OTHER_SECRET)
    assert USER not in json.dumps(panel)  # not even the user name on the page


# -- few keys move when a proxy is added --------------------------------------------------------------------------

def test_adding_or_removing_a_proxy_moves_only_the_keys_it_wins_or_held():
    fps = [fingerprint(make_key(i)) for i in range(1000)]
    urls = [f"http://proxy-{i}.example:3128" for i in range(4)] + ["socks5://u:secret-pw@proxy-4.example:1080"]
    direct = HttpClient()

    def homes(some: list[str]) -> dict[str, str]:
        egress = Egress(some, SystemClock(), direct)
        return {fp: egress.home(fp).proxy.masked for fp in fps}

    four, five = homes(urls[:4]), homes(urls)
    moved = [fp for fp in fps if four[fp] != five[fp]]
    assert all(five[fp] == "socks5://proxy-4.example:1080" for fp in moved)  # only to the new proxy
    assert 0.12 * len(fps) < len(moved) < 0.28 * len(fps)  # about 1/5 of them
    three = homes(urls[1:4])  # proxy-0 removed: only its keys move, spread over the others
    assert all(three[fp] == four[fp] for fp in fps if four[fp] != "http://proxy-0.example:3128")
    # a changed password is the same proxy: none of its keys move
    assert homes([*urls[:4], "socks5://u:new-password@proxy-4.example:1080"]) == five


# -- a proxy that is down rests, its keys take their next proxy, and come home --------------------------------------

def test_a_proxy_that_is_down_rests_and_its_keys_come_back(start_keyloom, google, proxies, loop_thread, caplog):
    caplog.set_level(logging.DEBUG)
    a = proxies(HttpConnectProxy, USER, OTHER_SECRET)
    b = proxies(Socks5Proxy, USER, SECRET)
    order = [a, b]
    urls = [with_credentials(a.url, USER, OTHER_SECRET), with_credentials(b.url, USER, SECRET)]
    probe = Egress(urls, SystemClock(), HttpClient())
    key = next(k for k in MANY_KEYS if probe.home(fingerprint(k)).n == 1)  # a key whose own proxy is `a`
    clock = ManualClock()
    running = start_keyloom(clock=clock, GEMINI_BASE_URL=google.base_url, GEMINI_API_KEYS=key, MAX_RETRY_NUM="1",
                            UPSTREAM_PROXIES=",".join(urls))
    kl = running.kl
    exit_a = kl.egress.exits[0]

    def last_carrier() -> _Forwarder:
        return carrier(google.generate_calls()[-1], order)

    def down(proxy: _Forwarder) -> None:
        loop_thread.run(proxy.stop())
        # its tunnels are cut: wait until Keyloom's pooled connections through it have seen it
        wait_until(lambda: all(c.closed for conns in exit_a.client._idle.values() for c in conns),
                   "the pooled connections through the stopped proxy to close")

    chat(running)
    assert last_carrier() is a

    down(a)
    chat(running)  # the same request went on through `b` at once: the client saw nothing
    assert last_carrier() is b
    assert exit_a.failures == 1 and exit_a.rest_until == clock.time() + REST_BASE
    status = dashboard(running).json()
    row = status["keys"][0]
    assert row["proxy"] == {"n": 2, "url": b.url, "home": 1, "home_url": a.url}
    assert row["state"] != "resting" and row["failures"] == 0 and row["last_error"] is None  # the key not blamed
    assert status["proxies"][0]["state"] == "resting" and status["proxies"][0]["until"] == clock.time() + REST_BASE
    assert status["proxies"][0]["carrying"] == 0 and status["proxies"][1]["carrying"] == 1
    key_state = kl.pool.get(fingerprint(key))
    assert key_state.backoff_failures == 0 and key_state.last_error is None

    clock.advance(REST_BASE + 1)  # the rest is over, the proxy still down: tried once more, resting twice as long
    chat(running)
    assert last_carrier() is b and exit_a.failures == 2 and exit_a.rest_until == clock.time() + 2 * REST_BASE

    loop_thread.run(a.start())  # back on its port; still resting, so the key stays on `b` for now
    chat(running)
    assert last_carrier() is b
    clock.advance(2 * REST_BASE + 1)
    chat(running)
    assert last_carrier() is a and exit_a.failures == 0 and exit_a.rest_until == 0.0
    status = dashboard(running).json()
    assert status["keys"][0]["proxy"]["n"] == 1 and status["proxies"][0]["state"] == "ok"
    never_shown(json.dumps(status) + caplog.text, SECRET, OTHER_SECRET)
    assert "proxy #1 http://127.0.0.1:" in caplog.text  # the log names the proxy, masked


def test_when_every_proxy_is_down_the_key_is_not_blamed(start_keyloom, google, proxies, loop_thread, caplog):
    caplog.set_level(logging.DEBUG)
    a = proxies(Socks5Proxy, USER, SECRET)
    url = with_credentials(a.url, USER, SECRET)
    loop_thread.run(a.stop())
    running = start_keyloom(clock=ManualClock(), GEMINI_BASE_URL=google.base_url, GEMINI_API_KEYS=MANY_KEYS[0],
                            MAX_RETRY_NUM="1", UPSTREAM_PROXIES=url)
    with pytest.raises(openai.APIStatusError) as e:
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert e.value.status_code == 502 and "could not connect to the proxy #1 socks5://127.0.0.1:" in e.value.message
    assert quote(USER, safe="") not in e.value.message  # named as scheme://host:port only
    key = running.kl.pool.keys[0]
    assert key.disabled_reason is None and key.backoff_failures == 0
    never_shown(e.value.message + json.dumps(e.value.body) + caplog.text, SECRET)


# -- SOCKS5 with credentials --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_with_credentials_and_tls_inside(start_keyloom, google, proxies, scheme):
    s = proxies(Socks5Proxy, USER, SECRET)
    url = with_credentials(s.url.replace("socks5://", f"{scheme}://"), USER, SECRET)
    running = start_keyloom(GEMINI_BASE_URL=google.base_url, UPSTREAM_PROXIES=url)
    for _ in range(3):
        chat(running)
    port = int(google.base_url.rsplit(":", 1)[1])
    hosts = {h for h, p in s.tunnels if p == port}
    # socks5h: the proxy is given the name; socks5: the address it was looked up to here
    assert hosts == {"localhost"} if scheme == "socks5h" else hosts and hosts <= {"127.0.0.1", "::1"}
    assert s.refused == 0 and all(carrier(r, [s]) is s for r in google.requests)


def test_socks5_with_the_wrong_password_is_a_clear_error(start_keyloom, google, proxies, caplog):
    caplog.set_level(logging.DEBUG)
    s = proxies(Socks5Proxy, USER, SECRET)
    running = start_keyloom(GEMINI_BASE_URL=google.base_url, MAX_RETRY_NUM="1",
                            UPSTREAM_PROXIES=with_credentials(s.url, USER, OTHER_SECRET))
    with pytest.raises(openai.APIStatusError) as e:
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert "refused" in e.value.message and s.refused >= 1 and google.generate_calls() == []
    assert all(k.disabled_reason is None for k in running.kl.pool.keys)
    never_shown(e.value.message + caplog.text, OTHER_SECRET, SECRET)


# -- Vertex AI: a service account's calls and its token refresh take its proxy -----------------------------------

def test_a_service_account_and_its_token_refresh_take_its_proxy(start_keyloom, google, proxies):
    a = proxies(HttpConnectProxy)
    b = proxies(Socks5Proxy, USER, SECRET)
    sa = make_service_account(google, "egress@proj-7.iam.gserviceaccount.com", "proj-7")
    running = start_keyloom(ENABLE_VERTEX="true", GOOGLE_CREDENTIALS_JSON=json.dumps([sa]), GEMINI_API_KEYS="",
                            VERTEX_BASE_URL=google.base_url,
                            UPSTREAM_PROXIES=f"{a.url} {with_credentials(b.url, USER, SECRET)}")
    key = next(k for k in running.kl.pool.keys if k.provider == "vertex")
    home = [a, b][running.kl.egress.home(key.fp).n - 1]
    other = b if home is a else a
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert out.choices[0].message.content and google.token_requests == 1
    assert all(carrier(r, [a, b]) is home for r in google.requests) and google.requests
    # every connection the fake accepted came through the account's proxy: the token request's too
    assert google.connections == home.carried and other.tunnels == []
    row = next(r for r in dashboard(running).json()["keys"] if r["fp"] == key.fp)
    assert row["proxy"]["url"] == home.url


# -- settings -----------------------------------------------------------------------------------------------------

def test_a_proxy_list_that_cannot_be_used_names_the_entry_never_the_password():
    pw = quote(SECRET, safe="")
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"UPSTREAM_PROXIES": f"http://127.0.0.1:3128, socks4://u:{pw}@127.0.0.1:1080"})
    text = str(e.value)
    assert "UPSTREAM_PROXIES" in text and "proxy 2: socks4:// proxies are not supported" in text
    never_shown(text, SECRET)
    s = Settings.from_env({"UPSTREAM_PROXIES": f"socks5h://u:{pw}@h.example:1080 http://h2.example:3128"})
    assert s.UPSTREAM_PROXIES == [f"socks5h://u:{pw}@h.example:1080", "http://h2.example:3128"]
    assert SECRET not in repr(s)


def test_no_proxy_list_keeps_upstream_proxy_for_every_key(start_keyloom, google, proxies):
    a = proxies(HttpConnectProxy, USER, OTHER_SECRET)
    running = start_keyloom(GEMINI_BASE_URL=google.base_url,
                            UPSTREAM_PROXY=with_credentials(a.url, USER, OTHER_SECRET))
    chat(running)
    assert not running.kl.egress and all(carrier(r, [a]) is a for r in google.requests)
    assert dashboard(running).json()["proxies"] == []


# -- the dashboard, in a real browser -------------------------------------------------------------------------------

def test_the_dashboard_shows_each_keys_proxy_and_the_proxies_health(browser, start_keyloom, google, proxies,
                                                                     loop_thread):
    import time

    from tests.support.browser import expect

    a = proxies(HttpConnectProxy, USER, OTHER_SECRET)
    b = proxies(Socks5Proxy, USER, SECRET)
    urls = [with_credentials(a.url, USER, OTHER_SECRET), with_credentials(b.url, USER, SECRET)]
    keys = MANY_KEYS[:8]
    clock = ManualClock(start=time.time())  # the session cookie's expiry is real to the browser
    running = start_keyloom(clock=clock, GEMINI_BASE_URL=google.base_url, GEMINI_API_KEYS=",".join(keys),
                            ADMIN_PASSWORD="admin-password-abcdefghij", UPSTREAM_PROXIES=",".join(urls))
    on_a = [k for k in keys if running.kl.egress.home(fingerprint(k)).n == 1]
    loop_thread.run(a.stop())
    for _ in keys:  # the first request through `a` finds it down: it rests, its keys go through `b`
        chat(running)
    assert running.kl.egress.exits[0].failures == 1

    page = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US").new_page()
    page.goto(running.url + "/")
    page.fill("#password", "admin-password-abcdefghij")
    page.click("#login-button")
    page.wait_for_selector("body[data-ready='1']")
    items = page.locator("#proxies-list li")
    expect(items).to_have_count(2)
    assert items.nth(0).get_attribute("data-state") == "resting" and "resting until" in items.nth(0).inner_text()
    assert f"#1 {a.url}" in items.nth(0).inner_text() and items.nth(1).get_attribute("data-state") == "ok"
    expect(page.locator("#keys-body .badge.proxy")).to_have_count(len(keys))
    expect(page.locator("#keys-body .badge.proxy.moved")).to_have_count(len(on_a))  # on `b` while `a` rests
    html = page.content()
    never_shown(html, SECRET, OTHER_SECRET)
    assert USER not in html and quote(USER, safe="") not in html
    page.click("#lang")
    expect(page.locator("#proxies-list li").nth(0)).to_contain_text("休息至")
    page.context.close()
