"""The Responses API's stored answers in Redis (REDIS_URL set): `previous_response_id`, GET and DELETE
/v1/responses/{id} work whichever replica answered, and RESPONSES_STORE_MB bounds the cluster's total.

Everything but the storage (ids, what is kept, the size cut, continuing) is `ResponseStore`'s, in
server/stored_responses.py, shared with the SQLite store.

Keys (p = REDIS_PREFIX):
- `p resp:id:{rid}` hash: response, context (JSON), created_at (epoch seconds by Keyloom's clock); its TTL is
  RESPONSES_STORE_DAYS, so Redis forgets an answer on time even if no replica writes again.
- `p resp:ids` sorted set rid → created_at: oldest first, for the age cut and the size cut.
- `p resp:sizes` hash rid → bytes, and `p resp:bytes` string: their sum (what RESPONSES_STORE_MB bounds).

Each write (and each delete) is one Lua script: the answer, the age cut and the size cut happen atomically, so
replicas writing at once keep the index, the sizes and the total in step. A read also checks created_at
against the age limit (like the SQLite store), so an injected clock and a lowered RESPONSES_STORE_DAYS hold
before the TTL runs out.
"""
from __future__ import annotations

from collections.abc import Callable

from ..clock import Clock
from ..settings import Settings
from ..stored_responses import ResponseStore
from .redis_backend import RedisBackend

# KEYS: 1 index (zset), 2 sizes (hash), 3 total (string). ARGV[1]: the prefix of one answer's key.
_DROP = """
local function drop(id)
  local b = redis.call('HGET', KEYS[2], id)
  if b then redis.call('DECRBY', KEYS[3], b) end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[1] .. id)
end
"""
# ARGV: 2 rid, 3 now, 4 response, 5 context, 6 bytes, 7 cap (bytes), 8 oldest created_at kept, 9 TTL (ms)
STORE = _DROP + """
drop(ARGV[2])
local key = ARGV[1] .. ARGV[2]
redis.call('HSET', key, 'response', ARGV[4], 'context', ARGV[5], 'created_at', ARGV[3])
redis.call('PEXPIRE', key, ARGV[9])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[6])
redis.call('INCRBY', KEYS[3], ARGV[6])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[8])) do drop(id) end
local cap = tonumber(ARGV[7])
while tonumber(redis.call('GET', KEYS[3]) or '0') > cap do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #oldest == 0 then break end
  drop(oldest[1])
end
return 1
"""
# ARGV: 2 rid
REMOVE = _DROP + """
drop(ARGV[2])
return 1
"""


class RedisStoredResponses(ResponseStore):
    def __init__(self, backend: RedisBackend, clock: Clock, settings: Callable[[], Settings]):
        super().__init__(clock, settings)
        self.r = backend
        self.keys = [backend.key("resp", "ids"), backend.key("resp", "sizes"), backend.key("resp", "bytes")]
        self.one = backend.key("resp", "id", "")  # + rid
        self._store_script = backend.client.register_script(STORE)
        self._remove_script = backend.client.register_script(REMOVE)

    def shared(self) -> bool:
        return self.r.up

    async def load(self) -> None:
        """Nothing to read at start: the total lives in Redis, kept by the scripts."""

    async def _fetch(self, rid: str, since: float) -> tuple[str, str] | None:
        response, context, created = await self.r.call(
            "reading the stored response", lambda: self.r.client.hmget(self.one + rid, ("response", "context",
                                                                                         "created_at")))
        if response is None or context is None or created is None or float(created) < since:
            return None
        return response.decode(), context.decode()

    async def _remove(self, rid: str) -> None:
        await self.r.call("deleting the stored response",
                          lambda: self._remove_script(keys=self.keys, args=[self.one, rid]))

    async def _store(self, rid: str, doc: str, ctx: str, size: int, cap: int, days: float) -> None:
        now = self.clock.time()
        ttl_ms = max(1, int(days * 86400 * 1000))
        await self.r.call("storing the response", lambda: self._store_script(
            keys=self.keys, args=[self.one, rid, repr(now), doc, ctx, size, cap, repr(now - days * 86400), ttl_ms]))
