"""Key management through the admin API (server/handlers/admin_keys.py, server/admin/keynotes.py): notes and
tags, disabling a key by hand and re-enabling it, removing the keys Google called invalid in one go, a key's
last 30 days. Through the real HTTP path, against the fake Gemini; restarts on the same DATA_DIR show what is
kept; every change is in the audit trail and no key appears in any answer."""
from __future__ import annotations

import httpx

from server.clock import ManualClock
from server.redact import fingerprint
from tests.conftest import KEYS, make_key
from tests.support.admin import AdminClient

ADMIN = "admin-password-abcdefghij"
FPS = [fingerprint(k) for k in KEYS]


def chat(running, n: int = 1) -> None:
    with httpx.Client(base_url=running.url, headers=running.auth(), timeout=20) as http:
        for _ in range(n):
            r = http.post("/v1/chat/completions",
                          json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text


def key_row(admin: AdminClient, fp: str) -> dict:
    return next(k for k in admin.ok("GET", "status")["keys"] if k["fp"] == fp)


def audit(admin: AdminClient) -> list[dict]:
    return admin.ok("GET", "audit")["audit"]


def restart(running, start_keyloom, **settings):
    data_dir = running.kl.data_dir
    running.loop.run(running.kl.stop(0))
    return start_keyloom(data_dir=data_dir, **settings)


def test_tags_and_notes_are_kept_checked_and_audited(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    fp = FPS[0]
    r = admin.ok("PUT", f"keys/{fp}/meta", {"tags": ["  team a ", "paid", "Paid", "", "back\nup"],
                                            "note": f"from Alice; her old key {KEYS[1]} is gone"})
    assert r["tags"] == ["team a", "paid", "backup"]  # trimmed, case-insensitive duplicates and empties dropped
    assert KEYS[1] not in r["note"] and "AIza…" in r["note"]  # a key pasted into a note is masked before storing
    # only what is sent changes
    assert admin.ok("PUT", f"keys/{fp}/meta", {"tags": ["paid", "team a"]})["note"] == r["note"]
    admin.ok("PUT", f"keys/{FPS[1]}/meta", {"tags": ["backup"]})
    meta = admin.ok("GET", "keys/meta")
    assert meta["keys"][fp]["tags"] == ["paid", "team a"] and meta["keys"][FPS[2]]["tags"] == []
    assert meta["tags"] == ["backup", "paid", "team a"]
    # bounded: how many, how long, what type; unknown keys and empty bodies
    for body in ({"tags": [f"t{i}" for i in range(9)]}, {"tags": ["x" * 33]}, {"tags": "paid"},
                 {"note": "x" * 501}, {"note": 5}, {}):
        bad = admin.call("PUT", f"keys/{fp}/meta", body)
        assert bad.status_code == 400, (body, bad.text)
    assert admin.call("PUT", "keys/0123456789ab/meta", {"tags": []}).status_code == 404
    trail = [a for a in audit(admin) if a["action"] == "key_note_changed"]
    assert len(trail) == 3 and "tags: paid, team a" in trail[1]["detail"]  # newest first
    assert all(k not in str(trail) for k in KEYS)
    # kept across a restart
    running = restart(running, start_keyloom, ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    assert admin.ok("GET", "keys/meta")["keys"][fp]["tags"] == ["paid", "team a"]


def test_a_key_disabled_by_hand_stays_out_until_re_enabled(start_keyloom, fake):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    fp = FPS[0]
    r = admin.ok("POST", f"keys/{fp}/disable", {"note": "shared by mistake\nin a chat"})
    assert r["disabled"]["disabled_by_hand"] is True and r["disabled"]["note"] == "shared by mistake in a chat"
    row = key_row(admin, fp)
    assert row["state"] == "disabled" and "shared by mistake" in row["why"]
    chat(running, 6)
    assert key_row(admin, fp)["requests"] == 0  # out of rotation: the other two keys answered
    assert sum(key_row(admin, f)["requests"] for f in FPS[1:]) == 6
    # a second disabling by hand replaces the note; the pool's own enable brings it back
    admin.ok("POST", f"keys/{fp}/disable", {"note": "still shared"})
    assert "still shared" in key_row(admin, fp)["why"]

    # kept across a restart, still known as "by hand"
    running = restart(running, start_keyloom, ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    assert key_row(admin, fp)["state"] == "disabled"
    assert admin.ok("GET", "keys/meta")["keys"][fp]["disabled_by_hand"] is True
    admin.ok("POST", f"keys/{fp}/enable")
    assert key_row(admin, fp)["state"] == "active"
    meta = admin.ok("GET", "keys/meta")["keys"][fp]
    assert meta["disabled_by_hand"] is False and meta["note"] == "still shared"  # the note stays as a remark
    actions = [a["action"] for a in audit(admin)]
    assert actions.count("key_disabled") == 2 and "key_enabled" in actions

    # a key Google disabled is not re-labelled "by hand"
    fake.keys[KEYS[1]] = "invalid"
    admin.test_keys([FPS[1]])
    assert key_row(admin, FPS[1])["state"] == "disabled"
    refused = admin.call("POST", f"keys/{FPS[1]}/disable", {"note": "x"})
    assert refused.status_code == 409 and "InvalidKey" in refused.text and KEYS[1] not in refused.text
    assert admin.ok("GET", "keys/meta")["keys"][FPS[1]]["disabled_by_hand"] is False
    assert admin.call("POST", "keys/0123456789ab/disable", {}).status_code == 404


def test_the_keys_google_called_invalid_go_in_one_confirmed_action(start_keyloom, fake):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    stored = make_key(50)  # added on the dashboard; the fake does not know it: invalid
    added = admin.ok("POST", "keys", {"keys": stored})["added"][0]["fp"]
    fake.keys[KEYS[1]] = "invalid"
    admin.ok("POST", f"keys/{FPS[2]}/disable", {"note": "by hand, not invalid"})
    admin.test_keys([FPS[1], added])
    meta = admin.ok("GET", "keys/meta")
    assert sorted(meta["invalid"]) == sorted([FPS[1], added])

    assert admin.call("POST", "keys/remove-invalid", {}).status_code == 400  # not without confirming
    assert len(admin.ok("GET", "status")["keys"]) == 4
    r = admin.ok("POST", "keys/remove-invalid", {"confirm": True})
    assert r["count"] == 2 and {k["fp"] for k in r["removed"]} == {FPS[1], added}
    assert all(k not in str(r) for k in [*KEYS, stored])
    left = {k["fp"]: k["state"] for k in admin.ok("GET", "status")["keys"]}
    assert left == {FPS[0]: "active", FPS[2]: "disabled"}  # the one disabled by hand stays
    rows = [a for a in audit(admin) if a["action"] == "invalid_keys_removed"]
    assert len(rows) == 1 and "2 keys" in rows[0]["detail"]
    assert not [a for a in audit(admin) if a["action"] == "key_removed"]  # one action, one audit row
    assert admin.ok("POST", "keys/remove-invalid", {"confirm": True})["count"] == 0

    # "fps" limits the removal to the keys the owner saw when confirming
    fake.keys[KEYS[0]] = "invalid"
    admin.test_keys([FPS[0]])
    assert admin.ok("POST", "keys/remove-invalid", {"confirm": True, "fps": ["0123456789ab"]})["count"] == 0
    assert admin.ok("POST", "keys/remove-invalid", {"confirm": True, "fps": [FPS[0]]})["count"] == 1

    # after a restart: the environment's invalid key stays out, the stored one is gone from the database
    running = restart(running, start_keyloom, ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    assert [k["fp"] for k in admin.ok("GET", "status")["keys"]] == [FPS[2]]


def test_a_keys_history_counts_requests_and_tokens_per_day(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, ADMIN_PASSWORD=ADMIN)
    # the bearer password: the session cookie would carry an expiry in the manual clock's past
    admin = AdminClient(running.url, ADMIN, headers={"Authorization": f"Bearer {ADMIN}"})
    for f in FPS[1:]:
        admin.ok("POST", f"keys/{f}/disable", {})  # one key answers everything
    chat(running, 3)
    clock.advance(86400)
    chat(running, 2)
    h = admin.ok("GET", f"keys/{FPS[0]}/history")
    days = h["days"]
    assert len(days) == 30 and days == sorted(days, key=lambda d: d["day"])
    assert [d["requests"] for d in days[-2:]] == [3, 2] and sum(d["requests"] for d in days) == 5
    assert days[-1]["day"] == running.kl.pool.day
    assert days[-1]["tokens"] > 0 and days[-1]["successes"] == 2
    assert all(d["requests"] == 0 for d in admin.ok("GET", f"keys/{FPS[1]}/history")["days"])
    assert admin.get("keys/0123456789ab/history").status_code == 404


def test_the_key_routes_keep_the_admin_doors(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    fp = FPS[0]
    # a session without the CSRF token, or not JSON, changes nothing
    r = admin.http.put(admin.api + f"keys/{fp}/meta", json={"tags": ["x"]})
    assert r.status_code == 403
    r = admin.http.post(admin.api + f"keys/{fp}/disable", content=b"{}",
                        headers={"X-CSRF-Token": admin.csrf, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert key_row(admin, fp)["state"] == "active"
    with running.http() as http:
        assert http.get("/api/keys/meta").status_code == 401
        # the bearer admin password works like everywhere else on the admin API
        r = http.put(f"/api/keys/{fp}/meta", json={"tags": ["cli"]}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.json()["tags"] == ["cli"]


def test_removing_a_key_removes_its_note_and_tags(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(running.url, ADMIN)
    fp = FPS[2]
    admin.ok("PUT", f"keys/{fp}/meta", {"tags": ["lent"], "note": "to Bob"})
    admin.ok("DELETE", f"keys/{fp}")
    admin.ok("POST", "keys", {"keys": KEYS[2]})
    meta = admin.ok("GET", "keys/meta")["keys"].get(fp, {})
    assert meta.get("tags", []) == [] and meta.get("note", "") == ""
    admin.close()
