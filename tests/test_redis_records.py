"""Redis mode (REDIS_URL) for the records a person keeps: saved conversations (server/store/redis_conversations.py),
stored Responses (server/store/redis_responses.py) and client key definitions (server/store/redis_client_keys.py).
Each behaves as its SQLite twin through the real HTTP path, against a real redis-server, and what one replica
writes another one reads: two Keyloom processes' worth (two instances) on one REDIS_URL."""
from __future__ import annotations

import asyncio
import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from server import stored_responses
from server.clock import ManualClock
from tests.support.wait import wait_until

ADMIN = "admin-password-for-redis-record-tests-1"
P = "kltest:"  # REDIS_PREFIX of these tests
HELLO = [{"role": "user", "content": "hello"}]



@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.flush()  # every test starts from an empty cluster
    return redis_server.url


@pytest.fixture
def rc(redis_server):
    client = redis_server.sync_client()
    yield client
    client.close()


@pytest.fixture
def pair(start_keyloom, redis_url):
    """Two replicas on one Redis (each with its own DATA_DIR, which holds nothing shared)."""
    def start(**settings):
        common = {"REDIS_URL": redis_url, "REDIS_PREFIX": P, "ADMIN_PASSWORD": ADMIN, **settings}
        return start_keyloom(REPLICA_NAME="a", **common), start_keyloom(REPLICA_NAME="b", **common)
    return start


def api(kl) -> httpx.Client:
    return kl.http(headers=kl.auth())


def admin(kl) -> httpx.Client:
    return kl.http(headers={"Authorization": f"Bearer {ADMIN}"})


def chat(kl, key: str) -> httpx.Response:
    with kl.http() as h:
        return h.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gemini-2.5-flash", "messages": HELLO})


# -- conversations -------------------------------------------------------------------------------------------

CONV = {"model": "gemini-2.5-flash", "params": {"temperature": 0.4, "system": "Be brief."},
        "messages": [{"role": "user", "content": "What is a llama?"},
                     {"role": "assistant", "content": "A **camelid**.", "usage": {"prompt_tokens": 5}}]}


def test_conversations_in_redis_create_read_update_search_delete(start_keyloom, redis_url, rc):
    kl = start_keyloom(REDIS_URL=redis_url, REDIS_PREFIX=P)
    assert kl.kl.conversations.__class__.__name__ == "RedisConversations"
    with api(kl) as h:
        c = h.post("/api/conversations", json=CONV).json()
        assert c["title"] == "What is a llama?" and c["params"] == CONV["params"] and c["model"] == CONV["model"]
        other = h.post("/api/conversations", json={"messages": [{"role": "user", "content": "Tell me about otters"}]})
        other = other.json()
        assert other["model"] is None
        r = h.put(f"/api/conversations/{c['id']}", json={"title": "Llamas", "params": {"temperature": 1.2}}).json()
        assert r["title"] == "Llamas" and r["params"] == {"temperature": 1.2} and r["messages"] == c["messages"]
        assert r["created_at"] == c["created_at"]
        assert [x["id"] for x in h.get("/api/conversations").json()["conversations"]] == [c["id"], other["id"]]
        found = h.get("/api/conversations", params={"q": "CAMELID"}).json()["conversations"]
        assert [x["id"] for x in found] == [c["id"]] and found[0]["message_count"] == 2
        assert found[0]["title"] == "Llamas"
        assert [x["id"] for x in h.get("/api/conversations", params={"q": "otters"}).json()["conversations"]] == \
            [other["id"]]
        exported = h.get(f"/api/conversations/{c['id']}/export", params={"format": "json"}).json()
        imported = h.post("/api/conversations/import", json=exported).json()
        assert imported["id"] != c["id"] and imported["messages"] == c["messages"]
        assert rc.zcard(P + "conv:ids") == 3 and int(rc.get(P + "conv:bytes")) == sum(
            int(rc.hget(P + f"conv:id:{x}", "bytes")) for x in (c["id"], other["id"], imported["id"]))
        assert h.delete(f"/api/conversations/{other['id']}").json() == {"deleted": other["id"]}
        assert h.get(f"/api/conversations/{other['id']}").status_code == 404
        assert h.delete(f"/api/conversations/{other['id']}").status_code == 404
        assert h.put(f"/api/conversations/{other['id']}", json={"title": "x"}).status_code == 404
        assert h.post("/api/conversations", json={"messages": [{"role": "robot"}]}).status_code == 400
        assert rc.zcard(P + "conv:ids") == 2 and not rc.exists(P + f"conv:id:{other['id']}")


def test_conversation_caps_hold_in_redis(start_keyloom, redis_url):
    kl = start_keyloom(REDIS_URL=redis_url, REDIS_PREFIX=P, MAX_CONVERSATIONS=2, MAX_CONVERSATIONS_MB=1)
    big = "x" * 300_000  # stored twice (messages and search text): ~600 KB, so two do not fit in 1 MiB
    with api(kl) as h:
        first = h.post("/api/conversations", json={"messages": [{"role": "user", "content": big}]})
        assert first.status_code == 201
        r = h.post("/api/conversations", json={"messages": [{"role": "user", "content": big}]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "storage_limit"
        small = h.post("/api/conversations", json={"messages": [{"role": "user", "content": "hi"}]}).json()
        r = h.post("/api/conversations", json={"messages": [{"role": "user", "content": "one more"}]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "too_many_conversations"
        r = h.put(f"/api/conversations/{small['id']}", json={"messages": [{"role": "user", "content": big}]})
        assert r.status_code == 413  # growing one past the cap is refused too, and changes nothing
        assert h.get(f"/api/conversations/{small['id']}").json()["messages"][0]["content"] == "hi"
        assert h.delete(f"/api/conversations/{first.json()['id']}").status_code == 200
        assert h.put(f"/api/conversations/{small['id']}",
                     json={"messages": [{"role": "user", "content": big}]}).status_code == 200


def test_a_conversation_saved_on_one_replica_is_read_changed_and_removed_on_the_other(pair):
    a, b = pair()
    with api(a) as ha, api(b) as hb:
        c = ha.post("/api/conversations", json=CONV).json()
        assert hb.get(f"/api/conversations/{c['id']}").json()["messages"] == CONV["messages"]
        assert [x["id"] for x in hb.get("/api/conversations", params={"q": "llama"}).json()["conversations"]] == \
            [c["id"]]
        hb.put(f"/api/conversations/{c['id']}", json={"title": "Renamed on b"})
        assert ha.get(f"/api/conversations/{c['id']}").json()["title"] == "Renamed on b"
        ha.delete(f"/api/conversations/{c['id']}")
        assert hb.get(f"/api/conversations/{c['id']}").status_code == 404


def test_max_conversations_holds_for_the_cluster_under_concurrent_writes(pair):
    a, b = pair(MAX_CONVERSATIONS=3)

    def create(i: int) -> int:
        with api((a, b)[i % 2]) as h:
            return h.post("/api/conversations",
                          json={"messages": [{"role": "user", "content": f"n{i}"}]}).status_code

    with ThreadPoolExecutor(8) as ex:
        statuses = list(ex.map(create, range(12)))
    assert sorted(statuses) == [201] * 3 + [409] * 9
    with api(b) as h:
        assert len(h.get("/api/conversations").json()["conversations"]) == 3


# -- stored Responses ----------------------------------------------------------------------------------------

def test_previous_response_id_works_whichever_replica_answers(pair, fake, rc):
    a, b = pair()
    first = a.client().responses.create(model="gemini-2.5-flash", input="my name is Ada")
    wait_until(lambda: rc.exists(P + f"resp:id:{first.id}"), "the answer to reach Redis")
    assert b.client().responses.retrieve(first.id).output_text == first.output_text
    second = b.client().responses.create(model="gemini-2.5-flash", input="what is my name?",
                                         previous_response_id=first.id)
    contents = fake.generate_calls()[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][0]["text"] == "my name is Ada"
    assert second.output_text == "Echo: what is my name?"
    b.client().responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        a.client().responses.retrieve(first.id)
    assert rc.zscore(P + "resp:ids", first.id) is None and rc.hget(P + "resp:sizes", first.id) is None
    wait_until(lambda: rc.exists(P + f"resp:id:{second.id}"), "the second answer to reach Redis")
    assert int(rc.get(P + "resp:bytes")) == int(rc.hget(P + "resp:sizes", second.id))


def test_an_answer_is_in_redis_before_its_client_has_it_streamed_or_not(pair, rc, monkeypatch):
    """A client that continues at once on another replica finds the answer: the replica that answered wrote it
    to Redis before the client had the answer (or its `response.completed` event). The write is made slow here,
    so an answer sent before its write would be seen without it."""
    a, b = pair()
    store = a.kl.responses
    real_store = store._store

    async def slow_store(*args):
        await asyncio.sleep(0.2)  # a slow Redis: only the order it causes is asserted, not a time
        await real_store(*args)
    monkeypatch.setattr(store, "_store", slow_store)
    monkeypatch.setattr(stored_responses, "WAIT_FOR_WRITE", 60.0)  # the write is waited for, however slow

    first = a.client().responses.create(model="gemini-2.5-flash", input="my name is Ada")
    assert rc.exists(P + f"resp:id:{first.id}")  # at the moment the client has it, no waiting
    second = b.client().responses.create(model="gemini-2.5-flash", input="and yours?", previous_response_id=first.id)
    assert second.output_text == "Echo: and yours?"

    seen = []
    with a.client().responses.create(model="gemini-2.5-flash", input="stream me", stream=True) as events:
        for event in events:
            if event.type == "response.completed":
                seen.append(bool(rc.exists(P + f"resp:id:{event.response.id}")))
                third = b.client().responses.create(model="gemini-2.5-flash", input="next",
                                                    previous_response_id=event.response.id)
                assert third.output_text == "Echo: next"
    assert seen == [True]


def test_stored_responses_expire_by_ttl_and_by_age_in_redis(start_keyloom, redis_url, rc):
    clock = ManualClock(1_800_000_000.0)
    kl = start_keyloom(clock=clock, REDIS_URL=redis_url, REDIS_PREFIX=P, RESPONSES_STORE_DAYS=2)
    old = kl.client().responses.create(model="gemini-2.5-flash", input="remember this")
    wait_until(lambda: rc.exists(P + f"resp:id:{old.id}"), "the answer to reach Redis")
    assert 0 < rc.pttl(P + f"resp:id:{old.id}") <= 2 * 86400 * 1000  # Redis forgets it on its own, too
    assert kl.client().responses.retrieve(old.id).id == old.id
    clock.advance(2 * 86400 + 1)
    with pytest.raises(openai.NotFoundError):
        kl.client().responses.retrieve(old.id)
    new = kl.client().responses.create(model="gemini-2.5-flash", input="a newer one")
    wait_until(lambda: rc.exists(P + f"resp:id:{new.id}"), "the newer answer to reach Redis")
    # the next write cut the aged one from the index, the sizes and the total
    assert not rc.exists(P + f"resp:id:{old.id}") and rc.zrange(P + "resp:ids", 0, -1) == [new.id]
    assert int(rc.get(P + "resp:bytes")) == int(rc.hget(P + "resp:sizes", new.id))


def test_the_oldest_stored_responses_go_first_past_responses_store_mb(start_keyloom, redis_url, rc):
    clock = ManualClock(1_800_000_000.0)
    kl = start_keyloom(clock=clock, REDIS_URL=redis_url, REDIS_PREFIX=P, RESPONSES_STORE_MB=1)
    text = "y" * 30_000  # stored as input, output and context: ~90 KB an answer, about 11 fit in 1 MiB
    ids = []
    for i in range(16):
        clock.advance(1)
        r = kl.client().responses.create(model="gemini-2.5-flash", input=f"{i} {text}")
        ids.append(r.id)
        wait_until(lambda rid=r.id: rc.zscore(P + "resp:ids", rid) is not None, "the answer to reach Redis")
    kept = rc.zrange(P + "resp:ids", 0, -1)
    assert 0 < len(kept) < 16 and kept == ids[-len(kept):]  # the newest, in order: the oldest went first
    total = int(rc.get(P + "resp:bytes"))
    assert total <= 1024 * 1024 and total == sum(int(v) for v in rc.hvals(P + "resp:sizes"))
    assert not rc.exists(P + f"resp:id:{ids[0]}")
    with pytest.raises(openai.NotFoundError):
        kl.client().responses.retrieve(ids[0])
    assert kl.client().responses.retrieve(ids[-1]).id == ids[-1]


# -- client key definitions ----------------------------------------------------------------------------------

def test_a_client_key_made_changed_and_removed_on_one_replica_is_in_force_on_the_other(pair, rc):
    a, b = pair()
    with admin(a) as h:
        made = h.post("/api/client-keys", json={"name": "friend", "daily_requests": 50}).json()
    key = made["key"]
    stored = rc.hget(P + "clientkey", made["id"])
    assert stored and key not in stored and key[8:] not in stored  # the hash and the prefix, never the key
    wait_until(lambda: chat(b, key).status_code == 200, "the key to work on the other replica")
    with admin(b) as h:
        listed = h.get("/api/client-keys").json()["client_keys"]
        assert [(e["id"], e["name"], e["daily_requests"]) for e in listed] == [(made["id"], "friend", 50)]
        assert h.put(f"/api/client-keys/{made['id']}", json={"enabled": False}).status_code == 200
    wait_until(lambda: chat(a, key).status_code == 401, "the switch-off to reach the first replica")
    assert chat(a, key).json()["error"]["code"] == "client_key_disabled"
    with admin(a) as h:
        h.put(f"/api/client-keys/{made['id']}", json={"enabled": True})
        wait_until(lambda: chat(b, key).status_code == 200, "the switch-on to reach the other replica")
        assert h.delete(f"/api/client-keys/{made['id']}").json() == {"deleted": True}
    wait_until(lambda: chat(b, key).status_code == 401, "the removal to reach the other replica")
    with admin(b) as h:
        assert h.get("/api/client-keys").json()["client_keys"] == []
    assert rc.hlen(P + "clientkey") == 0


def test_client_key_history_reads_the_clusters_daily_usage_from_redis(start_keyloom, redis_url, rc):
    clock = ManualClock(1_800_000_000.0)  # 2027-01-15 (UTC quota day by default)
    kl = start_keyloom(clock=clock, REDIS_URL=redis_url, REDIS_PREFIX=P, ADMIN_PASSWORD=ADMIN)
    with admin(kl) as h:
        made = h.post("/api/client-keys", json={"name": "script"}).json()
    today = kl.kl.quota_day.today()
    yesterday = (dt.date.fromisoformat(today) - dt.timedelta(days=1)).isoformat()
    long_ago = (dt.date.fromisoformat(today) - dt.timedelta(days=60)).isoformat()
    for day, n in ((yesterday, 3), (long_ago, 9)):  # as the flush of any replica writes them
        rc.hset(P + f"ckusage:{day}", mapping={f"{made['id']}\tgemini-2.5-flash\trequests": n,
                                               f"{made['id']}\tgemini-2.5-flash\ttokens": n * 10,
                                               f"{made['id']}\tgemini-2.0-flash\trequests": 1})
    with admin(kl) as h:
        entry = h.get("/api/client-keys").json()["client_keys"][0]
    days = {d["day"]: (d["requests"], d["tokens"]) for d in entry["usage"]["days"]}
    assert days[yesterday] == (4, 30) and long_ago not in days and today in days


def test_client_keys_changed_while_a_replica_missed_the_notice_are_read_when_redis_returns(
        start_keyloom, redis_server, redis_url, rc):
    kl = start_keyloom(REDIS_URL=redis_url, REDIS_PREFIX=P, ADMIN_PASSWORD=ADMIN)
    with admin(kl) as h:
        made = h.post("/api/client-keys", json={"name": "tool"}).json()
    # another replica's change whose notice this one never got (pub/sub is fire-and-forget)
    doc = rc.hget(P + "clientkey", made["id"]).replace('"enabled":true', '"enabled":false')
    assert '"enabled":false' in doc
    rc.hset(P + "clientkey", made["id"], doc)
    assert chat(kl, made["key"]).status_code == 200  # still the old definition in memory
    downs = kl.kl.redis.downs
    redis_server.stop()
    redis_server.start()  # same port and append-only file: the change is still there
    wait_until(lambda: kl.kl.redis.downs > downs and kl.kl.redis.up, "the replica to notice Redis left and came back")
    wait_until(lambda: chat(kl, made["key"]).status_code == 401, "the reload after Redis returned")


def test_with_redis_down_records_answer_503_while_answers_are_still_served(start_keyloom, redis_server, redis_url):
    kl = start_keyloom(REDIS_URL=redis_url, REDIS_PREFIX=P, ADMIN_PASSWORD=ADMIN)
    with api(kl) as h:
        c = h.post("/api/conversations", json=CONV).json()
    redis_server.stop()
    try:
        with api(kl) as h:
            r = h.get(f"/api/conversations/{c['id']}")
            assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
            assert h.post("/api/conversations", json=CONV).status_code == 503
        with admin(kl) as h:
            assert h.post("/api/client-keys", json={"name": "x"}).status_code == 503
        # an answer is still served (and simply not stored); continuing one needs the store
        assert kl.client().responses.create(model="gemini-2.5-flash", input="hi").output_text == "Echo: hi"
        with pytest.raises(openai.APIStatusError) as e:
            kl.client().responses.create(model="gemini-2.5-flash", input="x", previous_response_id="resp_abc")
        assert e.value.status_code == 503
    finally:
        redis_server.start()
    wait_until(lambda: kl.kl.redis.up, "the replica to see Redis again")
    with api(kl) as h:
        assert h.get(f"/api/conversations/{c['id']}").json()["title"] == c["title"]
