"""GET /metrics: what it counts after real traffic, and who may read it."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.redact import fingerprint, mask
from tests.conftest import KEYS, PASSWORD
from tests.support.wait import wait_until

ADMIN = "admin-password-for-metrics-0123"
MODEL = "gemini-2.0-flash"


def scrape(running, token: str | None = ADMIN) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with running.http() as h:
        r = h.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value, through prometheus_client's own parser (the format is checked too)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def total(found, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


def test_scrape_after_traffic_counts_requests_attempts_latency_keys_and_quota(start_keyloom, fake):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, API_KEY_DAILY_LIMIT="100", CONCURRENT_REQUESTS="1")
    fake.allow(KEYS[1], behaviour="quota_minute")  # a 429 from this key: it cools down, another key answers
    client = running.client()
    for _ in range(4):
        assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]) \
            .choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert chunks
    with running.http() as h:  # a client error: an unknown model
        assert h.post("/v1/chat/completions", headers=running.auth(),
                      json={"model": "gemini-0-nope", "messages": [{"role": "user", "content": "hi"}]}
                      ).status_code == 404
    wait_until(lambda: running.kl.in_flight == 0, "the requests to finish")

    text = scrape(running)
    found = samples(text)
    ok = dict(route="chat", model=MODEL, provider="gemini", client="owner", outcome="ok")
    assert value(found, "keyloom_requests_total", **ok) == 5
    assert total(found, "keyloom_requests_total", route="chat", outcome="4xx") == 1
    assert total(found, "keyloom_requests_total") == 6

    fp1, fp2 = fingerprint(KEYS[1]), fingerprint(KEYS[0])
    assert value(found, "keyloom_upstream_attempts_total", key=fp1, provider="gemini", model=MODEL,
                 result="QuotaExceeded") == 1
    assert total(found, "keyloom_upstream_attempts_total", result="ok") == 5
    assert total(found, "keyloom_upstream_attempts_total", key=fp1, result="ok") == 0

    assert value(found, "keyloom_request_duration_seconds_count", route="chat") == 6
    assert value(found, "keyloom_request_duration_seconds_bucket", route="chat", le="+Inf") == 6
    assert value(found, "keyloom_request_duration_seconds_sum", route="chat") > 0
    assert value(found, "keyloom_time_to_first_event_seconds_count", route="chat") == 1  # the stream

    assert value(found, "keyloom_keys", provider="gemini", state="cooling") == 1
    assert value(found, "keyloom_keys", provider="gemini", state="active") == 2
    assert value(found, "keyloom_keys", provider="gemini", state="disabled") == 0

    # quota: every attempt reserved a request on its key (the 429 one included), under the daily limit of 100
    pool = running.kl.pool
    for key in KEYS:
        used = pool.usage.requests(fingerprint(key), MODEL)
        if used:
            assert value(found, "keyloom_quota_used", key=fingerprint(key), provider="gemini", model=MODEL) == used
            assert value(found, "keyloom_quota_left", key=fingerprint(key), provider="gemini", model=MODEL) \
                == 100 - used
    assert value(found, "keyloom_quota_used", key=fp1, provider="gemini", model=MODEL) == 1
    assert total(found, "keyloom_quota_used") == 6
    assert fp2 in text

    assert value(found, "keyloom_in_flight_requests") == 0
    assert value(found, "keyloom_open_streams") == 0
    assert value(found, "keyloom_keepalives_sent_total") == running.kl.keepalive.sent

    for key in KEYS:  # fingerprints only: no key, nor its masked form, nor the passwords
        assert key not in text and mask(key) not in text
    assert "AIza" not in text and PASSWORD not in text and ADMIN not in text


def test_metrics_needs_the_admin_password_not_the_client_one(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, ADMIN_LOGIN_ATTEMPTS="3")
    with running.http() as h:
        r = h.get("/metrics")
        assert r.status_code == 401 and "keyloom_" not in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert h.get("/metrics", headers={"Authorization": f"Basic {ADMIN}"}).status_code == 401
        assert h.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        # the client password is a wrong guess here, counted in the throttle every door shares: after 3 wrong
        # ones, even the right password waits
        assert h.get("/metrics", headers={"Authorization": f"Bearer {PASSWORD}"}).status_code == 401
        for _ in range(2):
            assert h.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401
        r = h.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # …and at the admin API too
        assert h.get("/api/status", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 429


def test_metrics_allow_opens_it_for_a_listed_address(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, METRICS_ALLOW="10.0.0.0/8, 127.0.0.1")
    text = scrape(running, token=None)
    assert value(samples(text), "keyloom_keys", provider="gemini", state="active") == 3
    elsewhere = start_keyloom(ADMIN_PASSWORD=ADMIN, METRICS_ALLOW="10.0.0.0/8, ::1")
    with elsewhere.http() as h:
        assert h.get("/metrics").status_code == 401


def test_metrics_off_is_not_served_and_counts_nothing(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, METRICS="false")
    assert running.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with running.http() as h:
        assert h.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404
    assert running.kl.metrics.requests == {} and running.kl.metrics.attempts == {}


def test_openmetrics_when_the_scraper_asks(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    with running.http() as h:
        r = h.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}",
                                       "Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_a_client_key_is_counted_under_its_name(start_keyloom):
    key = "kl-alice-0123456789abcdef0123"
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, CLIENT_KEYS=f'[{{"name": "alice", "key": "{key}"}}]')
    for client in (running.client(api_key=key), running.client()):
        assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    wait_until(lambda: running.kl.in_flight == 0, "the requests to finish")
    text = scrape(running)
    found = samples(text)
    for client in ("alice", "owner"):
        assert value(found, "keyloom_requests_total", route="chat", model=MODEL, provider="gemini", client=client,
                     outcome="ok") == 1
    assert key not in text
