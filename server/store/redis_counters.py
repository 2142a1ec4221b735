"""The counters and key states in Redis: several processes add into one set of totals.

Layout (p = REDIS_PREFIX):
- `p usage:{quota day}` hash `"{fp}\\t{model}\\t{metric}"` → integer; metric: requests, successes, failures,
  prompt_tokens, completion_tokens, or `f:{failure kind}`. Kept 400 days (the key history reads it).
- `p clients:{quota day}` hash address → requests (MAX_REQUESTS_PER_DAY_PER_IP); kept 3 days.
- `p ckusage:{quota day}` hash `"{client key id}\\t{model}\\t{requests|tokens}"` → integer; kept 400 days.
- `p daily` hash `"{day in TZ}\\t{outcome}"` → requests (the dashboard's 30-day chart); pruned past 400 days.
- `p requests` stream, field `row`: JSON list, RequestRow.as_tuple() then the writer's replica name; capped
  at REQUEST_LOG_MAX_ROWS (approximate trim) and pruned past REQUEST_LOG_DAYS.
- `p audit` stream, field `row`: JSON (ts, client ip, via, action, target, detail); capped, pruned.
- `p keystate` hash fp → JSON [backoff until, back-offs in a row, last error, its time] (a key's health, last
  writer wins); `p keydisabled` hash fp → JSON [reason or null, since]: written only by the process that
  disabled or enabled the key, so one process's note of an error never undoes another's disabling;
  `p modelstate` hash `"{fp}\\t{model}"` → JSON [cooling until, exhausted day, reason], merged in the script
  (the later cool-down and the later exhausted day win: two processes parking a key for different reasons
  both stand); an owner's reset deletes the key's entries. `p learned` hash
  `"{fp}\\t{model}"` → JSON; `p project` hash fp → project number; `p statever` integer, raised by every
  write of any of these, so a process reads states back only when someone changed one.
- `p applied:{writer}` the last batch piece this process run wrote (kept 30 days).

Why deltas and a script: each process adds what it counted since its last tick (HINCRBY), so totals are the
sum of everyone's, whatever the order. A piece of a batch and the note that it was applied are written by one
Lua script, atomically; a piece sent again after a lost reply finds its note and changes nothing. So a count
is never added twice, and never lost while the process lives (the batch waits in memory while Redis is away).

The bound this gives: a process decides from the totals it read at its last tick plus its own count since.
Across a cluster, a daily limit can therefore be passed by at most what the *other* processes served in one
FLUSH_INTERVAL (tested in tests/test_redis_cluster.py; measured in the README).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any

import ujson

from ..pool.quota import Usage
from ..settings import Settings
from .counters import Batch, Cuts, Snapshot, States, Totals
from .errors import StoreDown
from .redis_backend import RUNTIME_ERRORS, RedisBackend

log = logging.getLogger("keyloom.redis")

USAGE_METRICS = ("requests", "successes", "failures", "prompt_tokens", "completion_tokens")
DAY_TTL = 400 * 86400
CLIENTS_TTL = 3 * 86400
APPLIED_TTL = 30 * 86400
AUDIT_MAX = 100_000
PIECE = 4000  # operations per script call: a long outage's backlog goes in pieces, each atomic
SCAN_LIMIT = 100_000  # entries a read-back takes of a hash a client can grow (addresses)

# KEYS[1]: this writer's applied mark; KEYS[2…]: what the operations touch. ARGV[1]: the piece's number,
# ARGV[2]: the mark's TTL, ARGV[3]: JSON [[op, key index, a, b], …] (numbers as strings: cjson has doubles).
APPLY = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
for _, op in ipairs(cjson.decode(ARGV[3])) do
  local k = KEYS[op[2]]
  local kind = op[1]
  if kind == 'i' then redis.call('HINCRBY', k, op[3], op[4])
  elseif kind == 'h' then redis.call('HSET', k, op[3], op[4])
  elseif kind == 'x' then redis.call('XADD', k, 'MAXLEN', '~', op[4], '*', 'row', op[3])
  elseif kind == 'e' then redis.call('EXPIRE', k, op[3])
  elseif kind == 'n' then redis.call('INCR', k)
  elseif kind == 'm' then
    local new = cjson.decode(op[4])
    local cur = redis.call('HGET', k, op[3])
    if cur then
      local old = cjson.decode(cur)
      if old[1] ~= cjson.null and (new[1] == cjson.null or old[1] > new[1]) then new[1] = old[1] end
      if old[2] ~= cjson.null and (new[2] == cjson.null or old[2] > new[2]) then
        new[2] = old[2]
        new[3] = old[3]
      end
    end
    redis.call('HSET', k, op[3], cjson.encode(new))
  end
end
return 1
"""


RESET = """
local prefix = ARGV[1]
for i = 1, 2 do
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[i])) do
    if string.sub(field, 1, #prefix) == prefix then gone[#gone + 1] = field end
  end
  for j = 1, #gone, 1000 do redis.call('HDEL', KEYS[i], unpack(gone, j, math.min(j + 999, #gone))) end
end
redis.call('HDEL', KEYS[3], string.sub(prefix, 1, #prefix - 1))
redis.call('INCR', KEYS[4])
return 1
"""


# KEYS: statever, usage:{day}, ckusage:{day}, the minutes' hashes, clients:{day}. ARGV[1]: how many minutes; the
# rest: the addresses whose daily counts to read (HMGET in slices: Lua's unpack has a stack limit).
TOTALS = """
local nm = tonumber(ARGV[1])
local out = {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
for i = 1, nm do out[#out + 1] = redis.call('HGETALL', KEYS[3 + i]) end
if #ARGV > 1 then
  local counts = {}
  for j = 2, #ARGV, 1000 do
    for _, n in ipairs(redis.call('HMGET', KEYS[4 + nm], unpack(ARGV, j, math.min(j + 999, #ARGV)))) do
      counts[#counts + 1] = n or ''
    end
  end
  out[#out + 1] = counts
end
return out
"""


class RedisCounters:
    shared = True

    def __init__(self, backend: RedisBackend, settings: Callable[[], Settings]):
        self.backend = backend
        self.settings = settings
        self._apply = backend.client.register_script(APPLY)
        self._reset = backend.client.register_script(RESET)
        self._totals = backend.client.register_script(TOTALS)
        self._seq = count(1)
        self._state_version: Any = None  # `p statever` as last read (None: never)
        # set by the flusher: another process changed a key state; read the states now, not at the next tick
        self.on_remote_change: Callable[[], None] | None = None
        backend.subscribe("states", self._remote_change)

    def _remote_change(self, data: Any) -> None:
        if self.on_remote_change is not None:
            self.on_remote_change()

    def key(self, *parts: str) -> str:
        return self.backend.key(*parts)

    # -- writing -------------------------------------------------------------------------------

    def _operations(self, batch: Batch) -> tuple[list[str], list[list[Any]]]:
        keys: list[str] = []
        index: dict[str, int] = {}

        def k(name: str) -> int:
            i = index.get(name)
            if i is None:
                keys.append(name)
                i = index[name] = len(keys) + 1  # KEYS[1] is the applied mark
            return i

        ops: list[list[Any]] = []
        expire: dict[str, int] = {}
        for day, fp, model, u in batch.usage:
            h = self.key("usage", day)
            hk = k(h)
            expire[h] = DAY_TTL
            for metric in USAGE_METRICS:
                n = getattr(u, metric)
                if n:
                    ops.append(["i", hk, f"{fp}\t{model}\t{metric}", str(n)])
            for kind, n in u.failure_kinds.items():
                ops.append(["i", hk, f"{fp}\t{model}\tf:{kind}", str(n)])
        for day, ip, n in batch.clients:
            h = self.key("clients", day)
            expire[h] = CLIENTS_TTL
            ops.append(["i", k(h), ip, str(n)])
        for day, key_id, model, req, tok in batch.client_keys:
            h = self.key("ckusage", day)
            expire[h] = DAY_TTL
            if req:
                ops.append(["i", k(h), f"{key_id}\t{model}\trequests", str(req)])
            if tok:
                ops.append(["i", k(h), f"{key_id}\t{model}\ttokens", str(tok)])
        for day, outcome, n in batch.daily:
            ops.append(["i", k(self.key("daily")), f"{day}\t{outcome}", str(n)])
        states = False
        disabled = set(batch.disabled)
        for row in batch.key_states:
            ops.append(["h", k(self.key("keystate")), row[0], ujson.dumps(list(row[3:]))])
            if row[0] in disabled:
                ops.append(["h", k(self.key("keydisabled")), row[0], ujson.dumps(list(row[1:3]))])
            states = True
        for row in batch.model_states:
            ops.append(["m", k(self.key("modelstate")), f"{row[0]}\t{row[1]}", ujson.dumps(list(row[2:]))])
            states = True
        for row in batch.learned:
            ops.append(["h", k(self.key("learned")), f"{row[0]}\t{row[1]}", ujson.dumps(list(row[2:]))])
            states = True
        for fp, project in batch.projects:
            ops.append(["h", k(self.key("project")), fp, project])
            states = True
        if states:
            ops.append(["n", k(self.key("statever"))])
        cap = str(max(1000, self.settings().REQUEST_LOG_MAX_ROWS))
        replica = self.backend.replica
        for r in batch.requests:
            ops.append(["x", k(self.key("requests")), ujson.dumps([*r.as_tuple(), replica]), cap])
        for row in batch.audit:
            ops.append(["x", k(self.key("audit")), ujson.dumps(list(row)), str(AUDIT_MAX)])
        for minute, name, n in batch.minutes:
            h = self.key("minute", str(minute))
            expire[h] = 180
            ops.append(["i", k(h), name, str(n)])
        for h, ttl in expire.items():
            ops.append(["e", k(h), str(ttl)])
        return keys, ops

    def _pieces(self, batch: Batch) -> list[tuple[int, list[str], str]]:
        """The batch as script calls, numbered once: a batch sent again is sent as the same pieces."""
        pieces = getattr(batch, "_redis_pieces", None)
        if pieces is None:
            keys, ops = self._operations(batch)
            pieces = []
            for start in range(0, len(ops), PIECE):
                part = ops[start:start + PIECE]
                used = sorted({op[1] for op in part})
                remap = {old: new for new, old in enumerate(used, start=2)}
                part = [[op[0], remap[op[1]], *op[2:]] for op in part]
                pieces.append((next(self._seq), [keys[i - 2] for i in used], ujson.dumps(part)))
            batch._redis_pieces = pieces  # type: ignore[attr-defined]
        return pieces

    async def write(self, batch: Batch, day: str, client_ips: Sequence[str] = (),
                    minutes: Sequence[int] = ()) -> Totals | None:
        mark = self.key("applied", self.backend.writer)
        states_changed = bool(batch.key_states or batch.model_states or batch.learned or batch.projects)
        try:
            for seq, keys, ops in self._pieces(batch):
                await self._apply(keys=[mark, *keys], args=[seq, APPLIED_TTL, ops])
            totals = await self._read(day, client_ips, minutes)
        except RUNTIME_ERRORS as e:
            self.backend.went_down(e)
            raise StoreDown() from None
        self.backend.fine()
        if states_changed:
            self.backend.publish("states")
        return totals

    async def read(self, day: str, client_ips: Sequence[str] = (), minutes: Sequence[int] = ()) -> Totals:
        try:
            return await self._read(day, client_ips, minutes)
        except RUNTIME_ERRORS as e:
            self.backend.went_down(e)
            raise StoreDown() from None

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, day: str, client_ips: Sequence[str], minutes: Sequence[int] = ()) -> Totals:
        """Today's totals, in one script call (one command for hosted plans that count them, one round trip)."""
        ips = list(client_ips)[:SCAN_LIMIT]
        keys = [self.key("statever"), self.key("usage", day), self.key("ckusage", day),
                *(self.key("minute", str(m)) for m in minutes), self.key("clients", day)]
        got = await self._totals(keys=keys, args=[len(minutes), *ips])
        version, usage_raw, ck_raw = got[0], _pairs(got[1]), _pairs(got[2])
        totals = Totals(day, usage=parse_usage(usage_raw), client_keys=parse_client_keys(ck_raw))
        for minute, raw in zip(minutes, got[3:3 + len(minutes)], strict=True):
            for name, n in _pairs(raw).items():
                totals.minutes[(minute, name.decode())] = int(n)
        if ips:
            totals.clients = {ip: int(n) for ip, n in zip(ips, got[3 + len(minutes)], strict=True) if n}
        if version != self._state_version:
            totals.states = await self._states()
            self._state_version = version
        return totals

    async def _states(self) -> States:
        pipe = self.backend.client.pipeline(transaction=False)
        for name in ("keystate", "keydisabled", "modelstate", "learned", "project"):
            pipe.hgetall(self.key(name))
        health_raw, disabled_raw, models_raw, learned_raw, projects_raw = await pipe.execute()
        states = States()
        for fp in {*health_raw, *disabled_raw}:
            health = _json_row(health_raw.get(fp), 4) or [None, 0, None, None]
            disabled = _json_row(disabled_raw.get(fp), 2) or [None, None]
            states.keys[fp.decode()] = (*disabled[:2], *health[:4])
        for field, raw in models_raw.items():
            fp, _, model = field.decode().partition("\t")
            row = _json_row(raw, 3)
            if row is not None and model:
                states.models[(fp, model)] = tuple(row)
        for field, raw in learned_raw.items():
            fp, _, model = field.decode().partition("\t")
            row = _json_row(raw, 4)
            if row is not None and model:
                states.learned.append((fp, model, *row))
        states.projects = [(fp.decode(), project.decode()) for fp, project in projects_raw.items()]
        return states

    async def load(self, day: str, client_ips: Sequence[str] = ()) -> Snapshot:
        r = self.backend.client
        self._state_version = None  # so the read below takes the states too
        totals = await self._read(day, ())
        states = totals.states if totals.states is not None else await self._states()
        totals.states = None
        clients: dict[str, int] = {}
        async for ip, n in r.hscan_iter(self.key("clients", day), count=1000):
            clients[ip.decode()] = int(n)
            if len(clients) >= SCAN_LIMIT:
                break
        totals.clients = clients
        newest = None
        for stream in ("requests", "audit"):
            last = await r.xrevrange(self.key(stream), count=1)
            if last:
                row = _json_row(dict(last[0][1] or {}).get(b"row"), 1)
                if row is not None and isinstance(row[0], int | float):
                    newest = max(newest or 0.0, float(row[0]))
        return Snapshot(totals, states, newest)

    # -- upkeep --------------------------------------------------------------------------------

    async def prune(self, cuts: Cuts) -> None:
        r = self.backend.client
        try:
            await r.xtrim(self.key("requests"), minid=str(int(cuts.requests_before * 1000)), approximate=True)
            await r.xtrim(self.key("audit"), minid=str(int(cuts.audit_before * 1000)), approximate=True)
            old = [f for f in await r.hkeys(self.key("daily"))
                   if _text(f).split("\t")[0] < cuts.daily_before_day]
            if old:
                await r.hdel(self.key("daily"), *old)
            stale = []
            for field, raw in (await r.hgetall(self.key("modelstate"))).items():
                row = _json_row(raw, 3)
                if row is None or ((row[1] is None or row[1] < cuts.quota_day) and (row[0] or 0) < cuts.now):
                    stale.append(field)
            if stale:
                await r.hdel(self.key("modelstate"), *stale)
            stale = []
            for field, raw in (await r.hgetall(self.key("learned"))).items():
                row = _json_row(raw, 4)
                if row is None or (row[3] or 0) < cuts.learned_before:
                    stale.append(field)
            if stale:
                await r.hdel(self.key("learned"), *stale)
        except RUNTIME_ERRORS as e:
            self.backend.went_down(e)
            raise StoreDown() from None

    async def reset_key_day(self, day: str, fp: str) -> None:
        """One script, so no tick of another process lands between finding the key's counts and deleting them:
        its counts of the day, its per-model states and its health go; whether it is disabled stays."""
        keys = [self.key("usage", day), self.key("modelstate"), self.key("keystate"), self.key("statever")]
        await self.backend.call("resetting the key's counts", lambda: self._reset(keys=keys, args=[fp + "\t"]))
        self.backend.publish("states")


def parse_usage(raw: dict[bytes, bytes]) -> dict[tuple[str, str], Usage]:
    out: dict[tuple[str, str], Usage] = {}
    for field, value in raw.items():
        try:
            fp, model, metric = field.decode().split("\t", 2)
            n = int(value)
        except (ValueError, UnicodeDecodeError):
            continue
        u = out.get((fp, model))
        if u is None:
            u = out[(fp, model)] = Usage()
        if metric.startswith("f:"):
            u.failure_kinds[metric[2:]] = n
        elif metric in USAGE_METRICS:
            setattr(u, metric, n)
    return out


def parse_client_keys(raw: dict[bytes, bytes]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for field, value in raw.items():
        try:
            key_id, model, metric = field.decode().split("\t", 2)
            n = int(value)
        except (ValueError, UnicodeDecodeError):
            continue
        req, tok = out.get((key_id, model), (0, 0))
        out[(key_id, model)] = (n, tok) if metric == "requests" else (req, n)
    return out


def _pairs(flat: Any) -> dict[bytes, bytes]:
    """A hash as a script returns it (a flat list: field, value, field, value…) as a dict."""
    items = list(flat or [])
    return dict(zip(items[::2], items[1::2], strict=False))


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _json_row(raw: Any, n: int) -> list[Any] | None:
    """A JSON list of at least n items, or None (a damaged value is skipped, never fatal)."""
    if raw is None:
        return None
    try:
        row = ujson.loads(raw)
    except (ValueError, TypeError):
        return None
    return row if isinstance(row, list) and len(row) >= n else None

