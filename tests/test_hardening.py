"""What an attack on a running Keyloom found (issue 12), each closed at its mechanism: credentials throttled on
every door, bodies capped before they are read, connections bounded per client, client-made rows and files
bounded, a deadline per request, nothing leaked by an aborted upload. In-process; the start-up cases run as real
processes in test_startup.py."""
from __future__ import annotations

import http.client
import json
import logging
import secrets
import socket
import sqlite3
import time

import httpx
import openai
import pytest

from server.clock import ManualClock
from server.limits import client_key
from server.store.requestlog import MAX_ERROR, MAX_MODEL, RequestRow
from server.throttle import WINDOW, CredentialThrottle
from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply
from tests.support.admin import AdminClient
from tests.support.closing import track
from tests.support.wait import closed_by_peer, raw_request, wait_until

ADMIN = "admin-password-for-hardening"
HELLO = [{"role": "user", "content": "hi"}]


# -- 1. the client password never reaches the keys ------------------------------------------------------------

def test_client_password_opens_the_api_and_the_playground_but_no_admin_route(start_keyloom):
    kl = start_keyloom()  # no ADMIN_PASSWORD: a separate admin password is generated
    assert kl.kl.admin_password != PASSWORD
    bearer = {"Authorization": f"Bearer {PASSWORD}", "Content-Type": "application/json"}
    with kl.http() as http:
        assert http.get("/v1/models", headers=bearer).status_code == 200
        assert http.get("/api/conversations", headers=bearer).status_code == 200
        assert http.post("/chat/login", json={"password": PASSWORD}).status_code == 200
        for method, path, body in (("POST", "/api/keys/export", {"password": PASSWORD}), ("GET", "/api/status", None),
                                   ("POST", "/api/keys", {"keys": "AIza" + "x" * 35}),
                                   ("PUT", "/api/settings", {"MAX_RETRY_NUM": 2})):
            r = http.request(method, path, headers=bearer, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            assert KEYS[0] not in r.text
        assert http.post("/api/login", json={"password": PASSWORD}).status_code == 401
        # the chat session does not open the dashboard either
        assert http.get("/api/status").status_code == 401
    assert kl.kl.settings.MAX_RETRY_NUM != 2 and len(kl.kl.pool.keys) == 3


# -- 2. wrong credentials are throttled on every door ---------------------------------------------------------

DOORS = [
    ("GET", "/v1/models", "bearer"),
    ("POST", "/v1/chat/completions", "bearer"),
    ("POST", "/v1/embeddings", "bearer"),
    ("GET", "/v1beta/models", "goog"),
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", "query"),
    ("POST", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", "goog"),
    ("GET", "/api/conversations", "bearer"),
]


def _offer(kind: str, secret: str) -> tuple[dict[str, str], dict[str, str]]:
    if kind == "bearer":
        return {"Authorization": f"Bearer {secret}"}, {}
    if kind == "goog":
        return {"x-goog-api-key": secret}, {}
    return {}, {"key": secret}


@pytest.mark.parametrize("method, path, kind", DOORS)
def test_wrong_credentials_are_throttled_on_every_door(start_keyloom, fake, method, path, kind):
    kl = start_keyloom(ADMIN_LOGIN_ATTEMPTS="3", TRUST_PROXY_HEADERS="1")
    body = {"model": "gemini-2.5-flash", "messages": HELLO, "input": "x",
            "contents": [{"parts": [{"text": "x"}]}]}
    me, other = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
    with kl.http() as http:
        def call(secret: str, who: dict[str, str]) -> httpx.Response:
            headers, params = _offer(kind, secret)
            return http.request(method, path, headers={**headers, **who}, params=params,
                                json=body if method == "POST" else None)
        for i in range(3):
            assert call(f"guess-{i}", me).status_code == 401
        refused = call(PASSWORD, me)  # locked: even the right password waits, so guessing learns nothing
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        text = refused.json()["error"]["message"]
        assert "wrong passwords or keys" in text or "Too many" in text
        if "v1beta" in path:  # the Gemini routes answer in Gemini's shape
            assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert call(PASSWORD, other).status_code not in (401, 429)  # another client is let in
    assert fake.generate_calls() == [] or all(c.key in KEYS for c in fake.generate_calls())


def test_no_credentials_is_not_a_guess_and_a_success_does_not_clear_the_count(start_keyloom):
    kl = start_keyloom(ADMIN_LOGIN_ATTEMPTS="3")
    with kl.http() as http:
        for _ in range(10):
            assert http.get("/v1/models").status_code == 401  # nothing offered: not counted
        assert http.get("/v1/models", headers=kl.auth()).status_code == 200
        for i in range(2):
            assert http.get("/v1/models", headers={"Authorization": f"Bearer g{i}"}).status_code == 401
        # a right password between guesses (say, from a client behind the same NAT) does not reset the count
        assert http.get("/v1/models", headers=kl.auth()).status_code == 200
        assert http.get("/v1/models", headers={"Authorization": "Bearer g3"}).status_code == 401
        assert http.get("/v1/models", headers=kl.auth()).status_code == 429


def test_ipv6_clients_count_per_64(start_keyloom):
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9" and client_key("203.0.113.9") == "203.0.113.9"
    kl = start_keyloom(ADMIN_LOGIN_ATTEMPTS="3", TRUST_PROXY_HEADERS="1")
    with kl.http() as http:
        for i in range(3):  # three addresses of one /64
            r = http.get("/v1/models", headers={"Authorization": "Bearer nope",
                                                "X-Forwarded-For": f"2001:db8:1:2::{i + 1}"})
            assert r.status_code == 401
        assert http.get("/v1/models", headers={**kl.auth(), "X-Forwarded-For": "2001:db8:1:2::99"}).status_code == 429
        assert http.get("/v1/models", headers={**kl.auth(), "X-Forwarded-For": "2001:db8:1:3::1"}).status_code == 200


def test_flooding_the_throttle_from_other_addresses_keeps_a_locked_record():
    clock = ManualClock()
    t = CredentialThrottle(clock, lambda: 3, max_tracked=100)
    for _ in range(3):
        t.failed("203.0.113.1")
    assert t.retry_after("203.0.113.1") > 0
    for i in range(5000):  # one failure each from thousands of other addresses
        t.failed(f"10.{i // 250}.{i % 250}.1")
    assert len(t) <= 101  # bounded: the table, plus the shared record of those that found no place
    assert t.retry_after("203.0.113.1") > 0  # the locked address was never dropped to make room
    clock.advance(WINDOW + 1)
    assert t.retry_after("203.0.113.1") == 0


def test_a_table_full_of_locked_clients_locks_newcomers_together():
    t = CredentialThrottle(ManualClock(), lambda: 2, max_tracked=10)
    for i in range(10):
        t.failed(f"192.0.2.{i}")
        t.failed(f"192.0.2.{i}")
    assert all(t.retry_after(f"192.0.2.{i}") for i in range(10))
    assert t.retry_after("198.51.100.1") == 0
    t.failed("198.51.100.1")  # no place left: counted in the shared record
    t.failed("198.51.100.2")
    assert t.retry_after("198.51.100.3") > 0  # an untracked client now waits with the others
    assert all(t.retry_after(f"192.0.2.{i}") for i in range(10))


# -- 3. the owner cannot be locked out by strangers behind an untrusted proxy -----------------------------------

def test_proxy_headers_from_a_local_proxy_that_is_not_trusted_are_warned_about_once(start_keyloom, caplog):
    kl = start_keyloom()  # TRUST_PROXY_HEADERS auto: off outside a Space
    with caplog.at_level(logging.WARNING, logger="keyloom.limits"), kl.http() as http:
        for _ in range(3):
            http.get("/v1/models", headers={**kl.auth(), "X-Forwarded-For": "203.0.113.50"})
    warnings = [r.getMessage() for r in caplog.records if r.name == "keyloom.limits"]
    assert len(warnings) == 1 and "TRUST_PROXY_HEADERS" in warnings[0] and "127.0.0.1" in warnings[0]


def test_no_warning_when_proxy_headers_are_trusted(start_keyloom, caplog):
    kl = start_keyloom(TRUST_PROXY_HEADERS="1")
    with caplog.at_level(logging.WARNING, logger="keyloom.limits"), kl.http() as http:
        http.get("/v1/models", headers={**kl.auth(), "X-Forwarded-For": "203.0.113.50"})
    assert not [r for r in caplog.records if r.name == "keyloom.limits"]


# -- 4. bodies are capped per route before they are read ------------------------------------------------------

UNAUTHENTICATED_PATHS = ["/api/status", "/api/login", "/chat/login", "/api/conversations", "/v1/chat/completions",
                         "/v1beta/models/gemini-2.5-flash:generateContent", "/", "/no/such/path", "/health"]


@pytest.mark.parametrize("path", UNAUTHENTICATED_PATHS)
def test_a_large_body_without_credentials_is_answered_before_it_is_sent(keyloom, path):
    """The head alone declares 32 MiB: the answer comes without a byte of body sent (old Tornado handlers read
    the whole body into memory first)."""
    status, data, s = raw_request(keyloom.kl.port, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                                  f"application/json\r\nContent-Length: {32 * 1024 * 1024}\r\n\r\n")
    s.close()
    assert status in (401, 404, 405, 413, 415), data[:200]


def test_small_refused_requests_keep_the_connection(keyloom):
    c = http.client.HTTPConnection("127.0.0.1", keyloom.kl.port, timeout=20)
    for _ in range(3):  # a refusal with a small body is answered once the body is read: keep-alive survives
        c.request("POST", "/v1/chat/completions", json.dumps({"model": "x"}),
                  {"Authorization": "Bearer wrong", "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 401
        c.request("GET", "/no/such/path")
        r = c.getresponse()
        r.read()
        assert r.status == 404
    c.request("GET", "/v1/models", headers=keyloom.auth())
    r = c.getresponse()
    r.read()
    assert r.status == 200
    c.close()


@pytest.mark.parametrize("path, size, auth", [
    ("/chat/login", 100_000, "none"),          # a password fits in a few KB
    ("/api/login", 100_000, "none"),
    ("/api/keys", 3 * 1024 * 1024, "admin"),   # the admin API's own cap
    ("/health", 100_000, "none"),
])
def test_routes_have_their_own_small_caps(start_keyloom, path, size, auth):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    headers = {"Content-Type": "application/json"}
    if auth == "admin":
        headers["Authorization"] = f"Bearer {ADMIN}"
    with kl.http() as http:
        r = http.post(path, content=b"{" + b" " * (size - 2) + b"}", headers=headers)
    assert r.status_code == 413 or (path == "/health" and r.status_code in (405, 413)), (r.status_code, r.text[:200])


def test_the_api_still_takes_large_bodies_from_its_client(keyloom, fake):
    text = "word " * 400_000  # 2 MB
    reply = keyloom.client().chat.completions.create(model="gemini-2.5-flash",
                                                     messages=[{"role": "user", "content": text}])
    assert reply.choices[0].message.content.startswith("Echo:")


# -- 5. connections per client, and a short header timeout ----------------------------------------------------

def test_one_address_cannot_hold_every_connection(start_keyloom):
    kl = start_keyloom(MAX_CONNECTIONS_PER_CLIENT="3")
    port = kl.kl.port
    held = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port))
        held.append(s)
    wait_until(lambda: kl.kl.slots.held.get("127.0.0.1") == 3, "three connections held")
    extra = socket.create_connection(("127.0.0.1", port))
    assert closed_by_peer(extra)  # the fourth from this address is closed at once
    # another address is served
    status, _, s = raw_request(port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2")
    s.close()
    assert status == 200
    for s in held:
        s.close()
    wait_until(lambda: "127.0.0.1" not in kl.kl.slots.held, "the held connections to be released")
    with kl.http() as http:
        assert http.get("/health").status_code == 200


def test_a_connection_that_sends_no_complete_head_is_closed_soon(start_keyloom):
    kl = start_keyloom(CLIENT_HEADER_TIMEOUT="1")
    s = socket.create_connection(("127.0.0.1", kl.kl.port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # slowloris: the head never ends
    assert closed_by_peer(s, timeout=60)  # the old 120 s header timeout would not close it within this
    idle = socket.create_connection(("127.0.0.1", kl.kl.port))
    assert closed_by_peer(idle, timeout=60)


def test_a_held_fake_stream_is_not_idle(start_keyloom, fake):
    kl = start_keyloom(CLIENT_HEADER_TIMEOUT="1", FAKE_STREAMING_INTERVAL="0.5")
    fake.script.append(Reply(delay=2.5))
    chunks = list(kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Echo:")


def test_behind_a_trusted_proxy_requests_in_progress_are_capped_per_forwarded_client(start_keyloom, fake):
    kl = start_keyloom(MAX_CONNECTIONS_PER_CLIENT="2", TRUST_PROXY_HEADERS="1", FAKE_STREAMING="false")
    release = []

    def hold(rec):
        release.append(rec)
        return Reply(delay=30)  # held until the test ends them
    fake.responder = hold
    a = {**kl.auth(), "X-Forwarded-For": "203.0.113.1"}
    body = {"model": "gemini-2.5-flash", "messages": HELLO}
    clients = [track(httpx.Client(base_url=kl.url, timeout=60)) for _ in range(2)]
    import threading
    threads = [threading.Thread(target=lambda c=c: _quiet_post(c, body, a), daemon=True) for c in clients]
    for t in threads:
        t.start()
    wait_until(lambda: len(release) == 2, "two requests held upstream")
    with kl.http() as http:
        r = http.post("/v1/chat/completions", json=body, headers=a)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_connections"
        fake.responder = None
        b = {**kl.auth(), "X-Forwarded-For": "203.0.113.2"}
        assert http.post("/v1/chat/completions", json=body, headers=b).status_code == 200
    for c in clients:
        c.close()


def _quiet_post(client: httpx.Client, body: dict, headers: dict) -> None:
    try:
        client.post("/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError:
        pass


# -- 7. what a client can make Keyloom store is bounded -------------------------------------------------------

def test_a_huge_model_id_is_refused_and_the_log_keeps_little_of_it(keyloom, loop_thread):
    huge = "m" * 50_000
    with keyloom.http() as http:
        # a request head is at most 16 KiB, so a path carries at most that much "model"
        r = http.post(f"/v1beta/models/{huge[:12_000]}:generateContent", headers={"x-goog-api-key": PASSWORD},
                      json={"contents": [{"parts": [{"text": "x"}]}]})
        assert r.status_code == 400 and len(r.text) < 1000
        for path, body in (("/v1/chat/completions", {"model": huge, "messages": HELLO}),
                           ("/v1/embeddings", {"model": huge, "input": "x"})):
            r = http.post(path, headers=keyloom.auth(), json=body)
            assert r.status_code == 400 and len(r.text) < 1000
    loop_thread.run(keyloom.kl.flusher.flush())
    rows = loop_thread.run(keyloom.kl.db.fetchall("SELECT model, error FROM request_log"))
    assert rows and all(len(m or "") <= MAX_MODEL and len(e or "") <= MAX_ERROR for m, e in rows)


def test_request_rows_clip_what_a_client_controls():
    row = RequestRow(ts=0, model="x" * 10_000, key_fp=None, attempts=0, status=400, latency_ms=1, prompt_tokens=0,
                     completion_tokens=0, client_ip="y" * 1000, stream=False, error="e" * 100_000)
    assert len(row.model) == MAX_MODEL and len(row.error) == MAX_ERROR and len(row.client_ip) <= 64


def test_the_request_log_keeps_at_most_its_row_cap(start_keyloom, loop_thread):
    kl = start_keyloom(REQUEST_LOG_MAX_ROWS="1000")
    rows = [RequestRow(ts=time.time(), model="m", key_fp=None, attempts=1, status=200, latency_ms=1,
                       prompt_tokens=0, completion_tokens=0, client_ip="1.2.3.4", stream=False, error=None)
            for _ in range(1500)]

    async def fill() -> tuple[bool, int, int]:
        for r in rows:
            kl.kl.request_log.add(r)
        await kl.kl.flusher.flush()
        due = kl.kl.flusher.prune_due()  # a fast-growing log is pruned before the hour is up
        await kl.kl.flusher.prune()
        (n,), = await kl.kl.db.fetchall("SELECT COUNT(*) FROM request_log")
        (newest,), = await kl.kl.db.fetchall("SELECT MAX(id) FROM request_log")
        return due, n, newest
    due, n, newest = loop_thread.run(fill())
    assert due and n == 1000 and newest >= 1500


def test_conversations_are_capped_in_number_and_bytes(start_keyloom, loop_thread):
    kl = start_keyloom(MAX_CONVERSATIONS="2", MAX_CONVERSATIONS_MB="1")
    with kl.http(headers=kl.auth()) as http:
        a = http.post("/api/conversations", json={"title": "a"})
        b = http.post("/api/conversations", json={"title": "b"})
        assert a.status_code == b.status_code == 201
        c = http.post("/api/conversations", json={"title": "c"})
        assert c.status_code == 409 and "MAX_CONVERSATIONS" in c.json()["error"]["message"]
        big = [{"role": "user", "content": "x" * 600_000}, {"role": "user", "content": "y" * 600_000}]
        r = http.put(f"/api/conversations/{a.json()['id']}", json={"messages": big})
        assert r.status_code == 413 and "MAX_CONVERSATIONS_MB" in r.json()["error"]["message"]
        assert http.delete(f"/api/conversations/{b.json()['id']}").status_code == 200
        assert http.post("/api/conversations", json={"title": "c"}).status_code == 201
    # the totals are read back from the database at start
    loop_thread.run(kl.kl.conversations.load())
    assert kl.kl.conversations.count == 2


def test_failed_sign_ins_from_many_addresses_write_one_audit_row(start_keyloom, loop_thread):
    # only the explicit flush below writes (the timer would split the 50 over its ticks)
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN, TRUST_PROXY_HEADERS="1", FLUSH_INTERVAL="60")
    with kl.http() as http:
        for i in range(50):
            r = http.post("/api/login", json={"password": "guess"}, headers={"X-Forwarded-For": f"192.0.2.{i}"})
            assert r.status_code == 401
    loop_thread.run(kl.kl.flusher.flush())
    rows = loop_thread.run(kl.kl.db.fetchall("SELECT action, detail FROM audit"))
    assert len(rows) == 1 and rows[0][0] == "login_failed"
    assert rows[0][1].startswith("50 wrong passwords from 50 addresses")


def test_a_full_disk_leaves_the_api_serving_and_pages_answering_clearly(start_keyloom, loop_thread):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(kl.url, ADMIN)

    async def fill_disk() -> None:  # SQLite's own "database or disk is full", without filling a real disk
        (pages,), = await kl.kl.db.fetchall("PRAGMA page_count")
        await kl.kl.db.fetchall(f"PRAGMA max_page_count = {pages}")
        # Fill the room left in the file's pages with rows shaped like sign-in sessions (random keys land in every
        # leaf, as a real session's would): once many tries in a row fail, no session row fits anywhere.
        failures = tries = 0
        while failures < 300:
            tries += 1
            assert tries < 200_000, "the database never filled up"
            # not expired: the periodic prune deletes expired sessions, which would make room again
            row = (secrets.token_hex(32), secrets.token_urlsafe(24), time.time(), time.time() + 3600, "127.0.0.1")
            try:
                await kl.kl.db.write([("INSERT INTO admin_session (token_hash, csrf, created_at, expires_at, "
                                       "client_ip) VALUES (?, ?, ?, ?, ?)", [row])])
                failures = 0
            except sqlite3.OperationalError as e:
                assert "full" in str(e)
                failures += 1
    loop_thread.run(fill_disk())
    client = kl.client()
    for _ in range(3):
        assert client.chat.completions.create(model="gemini-2.5-flash", messages=HELLO).choices
    with kl.http() as http:
        r = http.post("/api/login", json={"password": ADMIN})
        assert r.status_code == 507 and "disk" in r.json()["error"]["message"] and "Traceback" not in r.text
        r = http.post("/api/conversations", json={"title": "x" * 100, "messages": [
            {"role": "user", "content": "z" * 200_000}]}, headers=kl.auth())
        assert r.status_code == 507
        assert http.get("/").status_code == 200 and http.get("/chat").status_code == 200
    status = admin.get("status")  # reads still work: what is in memory and on disk
    assert status.status_code == 200 and status.json()["keys"]
    admin.close()


# -- 9. every request has a deadline -----------------------------------------------------------------------

def test_a_hanging_upstream_ends_at_the_request_deadline(start_keyloom, fake):
    kl = start_keyloom(REQUEST_DEADLINE="1", UPSTREAM_TIMEOUT="600", FAKE_STREAMING="false")
    fake.latency = 120
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert e.value.status_code == 504 and e.value.code == "deadline_exceeded"
    assert "REQUEST_DEADLINE" in e.value.message
    assert len(fake.generate_calls()) == 1
    wait_until(lambda: fake.cancelled == 1, "the upstream call to be dropped")


def test_the_same_transport_failure_is_tried_three_times_not_fifteen(start_keyloom, fake):
    kl = start_keyloom(MAX_RETRY_NUM="15", UPSTREAM_TIMEOUT="1", FAKE_STREAMING="false")
    fake.latency = 30
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert e.value.status_code == 504 and e.value.code == "upstream_timeout"
    assert len(fake.generate_calls()) == 3


def test_html_pages_in_place_of_answers_are_tried_three_times(start_keyloom, fake):
    kl = start_keyloom(MAX_RETRY_NUM="15")
    fake.responder = lambda rec: Reply(body=b"<html>captive portal</html>")
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert e.value.status_code == 502
    assert len(fake.generate_calls()) == 3


# -- 12. a clock that jumps forward does not delete history ------------------------------------------------

def test_pruning_trusts_only_the_time_it_has_seen_pass(start_keyloom, loop_thread):
    clock = ManualClock(1_750_000_000.0)
    kl = start_keyloom(clock=clock)
    rows = [RequestRow(ts=clock.time() - i * 3600, model="m", key_fp=None, attempts=1, status=200, latency_ms=1,
                       prompt_tokens=0, completion_tokens=0, client_ip="1.2.3.4", stream=False, error=None)
            for i in range(48)]
    flusher = kl.kl.flusher

    async def count() -> int:
        (n,), = await kl.kl.db.fetchall("SELECT COUNT(*) FROM request_log")
        return n

    async def scenario() -> list[int]:
        for r in rows:
            kl.kl.request_log.add(r)
        await flusher.flush()
        await kl.kl.audit.record("note", ip=None, via="test")
        await flusher.load()  # as at a start: the newest record is the time last seen
        clock._wall += 10 * 86400  # the wall clock jumps ten days; no time passed
        await flusher.prune()
        after_jump = await count()
        clock._wall += 463 * 86400
        await flusher.prune()
        after_big_jump = await count()
        (audit,), = await kl.kl.db.fetchall("SELECT COUNT(*) FROM audit")
        clock._mono += 6 * 86400 + 12 * 3600  # now six and a half days really pass
        await flusher.prune()
        return [after_jump, after_big_jump, audit, await count()]
    after_jump, after_big_jump, audit, after_real_time = loop_thread.run(scenario())
    assert after_jump == 48 and after_big_jump == 48 and audit == 1
    # rows that are now older than REQUEST_LOG_DAYS (7) by the time that really passed are gone, the rest stay
    assert after_real_time == 13


# -- 13. an aborted upload does not leak an in-flight count -------------------------------------------------

def test_an_aborted_upload_does_not_leave_a_request_in_flight(keyloom):
    kl = keyloom.kl
    s = socket.create_connection(("127.0.0.1", kl.port))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PASSWORD}\r\n"
              "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"model\":".encode())
    wait_until(lambda: kl.in_flight == 1, "the upload to be in progress")
    s.close()
    wait_until(lambda: kl.in_flight == 0, "the aborted upload to be forgotten")


# -- 14. the chat playground's cookie is Secure behind HTTPS ----------------------------------------------------

def test_the_playground_cookie_is_secure_behind_https(start_keyloom):
    kl = start_keyloom(TRUST_PROXY_HEADERS="1")
    with kl.http() as http:
        r = http.post("/chat/login", json={"password": PASSWORD},
                      headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.3"})
        assert r.status_code == 200 and "secure" in r.headers["set-cookie"].lower()
        r = http.post("/chat/login", json={"password": PASSWORD}, headers={"X-Forwarded-For": "203.0.113.3"})
        assert "secure" not in r.headers["set-cookie"].lower()


def test_sqlite_errors_are_clear_errors_not_tracebacks(start_keyloom, loop_thread):
    kl = start_keyloom()

    async def break_table() -> None:
        await kl.kl.db.write([("DROP TABLE conversation", [()])])
    loop_thread.run(break_table())
    with kl.http(headers=kl.auth()) as http:
        r = http.get("/api/conversations")
    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"


def test_the_readmes_nginx_example_forwards_the_client_and_says_to_trust_it():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    for name in ("README.md", "README.zh-CN.md"):
        text = (root / name).read_text(encoding="utf-8")
        block = text.split("```nginx", 1)[1].split("```", 1)[0]
        assert "X-Forwarded-For $proxy_add_x_forwarded_for" in block and "X-Forwarded-Proto $scheme" in block
        after = text.split("```nginx", 1)[1].split("```", 2)[1]
        assert "TRUST_PROXY_HEADERS=1" in after[:600], name


def test_tool_arguments_nested_too_deeply_to_pass_on_are_a_400(keyloom, fake):
    # deep enough to parse (the arguments are a JSON string) but not to encode once wrapped in Gemini's request
    arguments = '{"a": ' + "[" * 1020 + "]" * 1020 + "}"
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                    "name": "f", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    with keyloom.http() as http:
        r = http.post("/v1/chat/completions", headers=keyloom.auth(),
                      content=json.dumps({"model": "gemini-2.5-flash", "messages": messages}))
    assert r.status_code == 400, r.text[:300]
    assert fake.generate_calls() == []


def test_a_stopped_keyloom_gives_its_data_dir_back(start_keyloom, tmp_path, loop_thread):
    first = start_keyloom(data_dir=tmp_path / "shared")
    loop_thread.run(first.kl.stop(0))
    second = start_keyloom(data_dir=tmp_path / "shared")  # refused with DataDirBusy if the lock were kept
    with second.http() as http:
        assert http.get("/health").status_code == 200
