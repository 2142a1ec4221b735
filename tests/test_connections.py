"""Upstream connections are reused: a burst of requests must not open a TCP (and TLS) connection each."""
from __future__ import annotations

import concurrent.futures

HELLO = [{"role": "user", "content": "hello"}]


def test_50_sequential_completions_reuse_a_handful_of_connections(keyloom, fake):
    fake.connections = 0
    client = keyloom.client()
    for i in range(50):
        r = client.chat.completions.create(model="gemini-2.0-flash", messages=[{"role": "user", "content": f"n{i}"}])
        assert r.choices[0].message.content == f"Echo: n{i}"
    assert len(fake.generate_calls()) == 50
    assert fake.connections <= 3, f"{fake.connections} upstream connections for 50 requests"


def test_50_sequential_streams_reuse_connections(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    fake.connections = 0
    client = kl.client()
    for _ in range(50):
        text = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="gemini-2.0-flash", messages=HELLO, stream=True)
                       if c.choices)
        assert text == "Echo: hello"
    assert fake.connections <= 3


def test_a_concurrent_burst_is_bounded_by_its_concurrency(keyloom, fake):
    fake.connections = 0
    opened_before = keyloom.kl.http.connections_opened
    client = keyloom.client()

    def one(_):
        return client.chat.completions.create(model="gemini-2.0-flash", messages=HELLO).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(one, range(8))) == ["Echo: hello"] * 8
    assert len(fake.generate_calls()) == 24
    assert fake.connections <= 8 + 1
    assert keyloom.kl.http.connections_opened - opened_before == fake.connections
