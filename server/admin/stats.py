"""What the dashboard shows, read from the request log and the pool. Admin path only: the
request path never waits for any of this."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..pool.learned import mask_project
from ..store.history import STATUS_FILTERS, History
from ..store.requestlog import OUTCOMES, outcome

if TYPE_CHECKING:
    from ..app import Keyloom

__all__ = ["STATUS_FILTERS", "Stats"]  # the filters' one definition is server/store/history.py


PER_KEY_EGRESS = ("gemini", "vertex")  # the providers whose calls take a key's own proxy (UPSTREAM_PROXIES)


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _abbreviation(moment: datetime) -> str:
    """The zone's abbreviation at that moment (PST, PDT, CST…); UTC-03 for zones that have none."""
    abbr = moment.strftime("%Z")
    return f"UTC{abbr}" if abbr and abbr[0] in "+-" else abbr


def _reset_text(local: str, tz: str, quota_tz: str, abbr: str) -> str:
    """E.g. '2025-01-02 16:00 Asia/Shanghai (00:00 America/Los_Angeles, PST)'."""
    if tz == quota_tz:
        return f"{local} {tz} ({abbr})"
    return f"{local} {tz} (00:00 {quota_tz}, {abbr})"


class Stats:
    """`history`: where the request log, daily totals and charts are read (SQLite, or the cluster's Redis)."""

    def __init__(self, kl: Keyloom, history: History):
        self.kl = kl
        self.history = history

    async def service(self) -> dict[str, Any]:
        kl = self.kl
        s = kl.settings
        now = kl.clock.time()
        day_of = kl.flusher.day_of()
        today = day_of(now)
        rows: dict[str, int] = {}
        for day, kind, n in await self.history.daily(today):
            if day == today:
                rows[kind] = rows.get(kind, 0) + n
        total = sum(rows.values())
        hour_n, p50, p95 = await self.history.last_hour(now - 3600)
        reset = kl.pool.quota_day.next_reset()
        zone = ZoneInfo(s.TZ)
        quota_zone = kl.pool.quota_day.zone  # the one in force (QUOTA_RESET_TZ as read at start)
        reset_local = datetime.fromtimestamp(reset, zone).strftime("%Y-%m-%d %H:%M")
        reset_abbr = _abbreviation(datetime.fromtimestamp(reset, quota_zone))
        from .. import __version__
        return {
            "version": __version__, "demo": kl.demo,
            "uptime_seconds": round(kl.clock.monotonic() - kl.started_mono, 1),
            "now": now, "tz": s.TZ, "now_text": datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
            "today": today, "quota_day": kl.pool.day, "quota_reset_tz": str(quota_zone),
            "quota_reset_at": reset, "quota_reset_in": round(max(0.0, reset - now)),
            # the reset as a time in TZ (the pages' zone), and the zone whose midnight it is with that zone's
            # own abbreviation: never one zone's abbreviation next to another's name
            "quota_reset_local": reset_local, "quota_reset_abbr": reset_abbr,
            "quota_reset_text": _reset_text(reset_local, s.TZ, str(quota_zone), reset_abbr),
            "requests_today": total, "outcomes_today": {k: rows.get(k, 0) for k in OUTCOMES},
            "success_rate": _round(100.0 * rows.get("ok", 0) / total) if total else None,
            "requests_last_hour": hour_n, "p50_ms": _round(p50), "p95_ms": _round(p95),
            "in_flight": max(0, kl.in_flight - 1), "keys": kl.pool.counts(), "models": len(kl.router.chat_models()),
            "stored_keys": sum(1 for k in kl.pool.keys if k.source == "dashboard"),
            "reuse": {**kl.reuse.stats.view(), "cached_now": len(kl.reuse)},
        }

    def keys(self) -> list[dict[str, Any]]:
        kl = self.kl
        pool = kl.pool
        pool.check_day()
        per_key: dict[str, list[tuple[str, Any]]] = {}
        for (fp, model), u in pool.usage.rows.items():
            per_key.setdefault(fp, []).append((model, u))
        now = kl.clock.time()
        learned_models: dict[str, list[str]] = {}  # models with a limit learned from Google, per key
        for fp, model in pool.learned.limits:
            if pool.learned.get(fp, model, now) is not None:
                learned_models.setdefault(fp, []).append(model)
        out = []
        for key in pool.keys:
            state, until, why = pool.state(key)
            models = {m: u for m, u in per_key.get(key.fp, [])}
            for m, ms in key.models.items():
                if m not in models and (ms.exhausted_day == pool.day or ms.cooldown_until > kl.clock.time()):
                    models[m] = None
            for m in learned_models.get(key.fp, ()):
                if m not in models:
                    models[m] = None
            rows = []
            req = ok = fail = pt = ct = 0
            for m in sorted(models):
                u = models[m]
                mstate, muntil = pool.model_state(key, m)
                learned = pool.learned.get(key.fp, m, now)
                # "limit": the configured one (API_KEY_DAILY_LIMIT, MODEL_DAILY_LIMITS); "learned": what Google's
                # 429s named for this key's project (pool/learned.py)
                r = {"model": m, "limit": pool.limits.for_model(m, key.provider), "state": mstate, "until": muntil,
                     "learned": None if learned is None else {
                         "per_day": learned.per_day, "per_minute": learned.per_minute,
                         "tokens_per_minute": learned.tokens_per_minute, "learned_at": learned.learned_at},
                     "requests": 0, "successes": 0, "failures": 0, "tokens": 0}
                if u is not None:
                    r.update(requests=u.requests, successes=u.successes, failures=u.failures,
                             tokens=u.prompt_tokens + u.completion_tokens, failure_kinds=dict(u.failure_kinds))
                    req += u.requests
                    ok += u.successes
                    fail += u.failures
                    pt += u.prompt_tokens
                    ct += u.completion_tokens
                rows.append(r)
            out.append({
                "fp": key.fp, "masked": key.masked, "source": key.source, "provider": key.provider,
                "project": mask_project(pool.learned.project_of(key.fp) or "") or None,
                "state": state, "until": until,
                "why": kl.redactor(why) if why else why,
                "requests": req, "successes": ok, "failures": fail, "prompt_tokens": pt, "completion_tokens": ct,
                "tokens": pt + ct, "models": rows,
                "last_error": kl.redactor(key.last_error) if key.last_error else None,
                "last_error_at": key.last_error_at, "disabled_at": key.disabled_at,
                # UPSTREAM_PROXIES: the proxy it leaves through (scheme://host:port only), None when not per key
                "proxy": kl.egress.key_view(key.fp) if key.provider in PER_KEY_EGRESS else None,
            })
        return out

    def proxies(self) -> list[dict[str, Any]]:
        """UPSTREAM_PROXIES and their health ([] when it is empty)."""
        kl = self.kl
        fps = [k.fp for k in kl.pool.keys if k.provider in PER_KEY_EGRESS]
        return kl.egress.view(fps, kl.redactor)

    async def charts(self) -> dict[str, Any]:
        kl = self.kl
        now = kl.clock.time()
        end_minute = int(now // 60) * 60
        start = end_minute - 59 * 60
        minutes = {k: [0] * 60 for k in OUTCOMES}
        for m, kind, n in await self.history.minutes(start):
            i = int((m - start) // 60)
            if 0 <= i < 60 and kind in minutes:
                minutes[kind][i] += n
        zone = ZoneInfo(kl.settings.TZ)
        today = datetime.fromtimestamp(now, zone).date()
        days = [(today - timedelta(days=29 - i)).isoformat() for i in range(30)]
        index = {d: i for i, d in enumerate(days)}
        per_day = {k: [0] * 30 for k in OUTCOMES}
        for day, kind, n in await self.history.daily(days[0]):
            if day in index and kind in per_day:
                per_day[kind][index[day]] += n
        return {"minutes": {"start": start, "step": 60, "series": minutes},
                "days": {"days": days, "series": per_day}}

    async def requests(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        kl = self.kl
        out = []
        for r in await self.history.recent_requests(status, limit):
            key = kl.pool.get(r.key_fp) if r.key_fp else None
            out.append({"id": r.id, "ts": r.ts, "model": r.model, "key_fp": r.key_fp,
                        "key": key.masked if key else None, "attempts": r.attempts, "status": r.status,
                        "outcome": outcome(r.status), "latency_ms": r.latency_ms, "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens, "client_ip": r.client_ip, "stream": r.stream,
                        "error": kl.redactor(r.error) if r.error else None, "client": r.client,
                        # the replica that served it (Redis mode; None in SQLite mode, where there is one)
                        "replica": r.replica})
        return out
