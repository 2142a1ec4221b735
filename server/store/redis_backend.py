"""The connection every Redis-backed store shares: one client, one key prefix, one change channel, and one
opinion on whether Redis is reachable.

Why one place: a replica must say *once* that Redis went away and once that it came back (not once per store
per tick), and every store must react to the return the same way (write what it kept, read what others
changed meanwhile). Pub/sub carries "this changed, read it again" notices between replicas; it is
fire-and-forget, so a replica that was cut off reloads everything when it reconnects, and each store's own
periodic read-back heals a notice that was lost.

Nothing on the request path calls Redis: requests decide from memory; the flush tick and the admin paths
talk to Redis through this object.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
import ujson
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ApiError
from ..shutdown import OVERRAN, where

log = logging.getLogger("keyloom.redis")

DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError,
                                                asyncio.TimeoutError)
# Redis answered, and said no (a wrong password, a user without the rights, a database number out of range):
# redis-py makes some of these ConnectionErrors, but waiting will not mend them
REFUSALS: tuple[type[BaseException], ...] = (AuthenticationError, AuthorizationError, NoPermissionError,
                                             ResponseError)
# While serving, anything Redis answers with an error (out of memory under `noeviction`, READONLY on a replica,
# MISCONF when it cannot persist) is treated like Redis being away: said once, kept in memory, retried.
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (*DOWN_ERRORS, RedisError)
RETRY_EVERY = 0.5  # seconds between attempts to reach Redis again while it is down
CLOSE_WAIT = 2.0   # seconds each wait of `RedisBackend.close` may take (milliseconds when well)

Handler = Callable[[Any], Awaitable[None] | None]


class StoreUnavailable(ApiError):
    """The shared store cannot be reached for an admin-path read or write (requests keep being served)."""

    def __init__(self, what: str = "this"):
        super().__init__(503, f"Redis cannot be reached right now, so {what} cannot be done; requests are still "
                              "served from memory. Try again when Redis is back.", type="service_unavailable",
                         code="store_unavailable")


def safe_url(url: str) -> str:
    """The URL without its secrets, for log lines and errors: the password as ***, the query string (where
    redis-py also takes `password=`) left out."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(REDIS_URL, unreadable)"
    host = parts.hostname or ""
    auth = f"{parts.username or ''}:***@" if parts.password is not None else \
        (f"{parts.username}@" if parts.username else "")
    netloc = auth + host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def url_secrets(url: str) -> list[str]:
    """What in REDIS_URL must never be printed, in the forms it may travel in, for the redactor: the password
    as written and percent-decoded, and any `password=` in the query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [v for k, vs in parse_qs(parts.query).items() if k.lower() == "password" for v in vs]
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return [f for f in found if f]


def url_problem(url: str) -> str | None:
    """Why REDIS_URL cannot be used (never quoting it), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return ("is not a URL Keyloom can read: a '/', '@' or ':' in the password must be percent-encoded "
                "(%2F, %40, %3A)")
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must start with redis://, rediss:// (TLS) or unix://"
    if parts.scheme != "unix" and not parts.hostname:
        return "names no host (redis://[:password@]host:6379/0)"
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        return "the database after the host must be a number (…:6379/0)"
    return None


def replica_name(configured: str) -> str:
    """REPLICA_NAME, else the host name (a container's id on Docker, the Space's pod name on HuggingFace)."""
    return configured or socket.gethostname() or "replica"


# what a store's reload after Redis came back can raise when Redis is away again or refuses (said once)
RELOAD_FAILURES: tuple[type[BaseException], ...] = (*RUNTIME_ERRORS, StoreUnavailable)


class RedisBackend:
    def __init__(self, url: str, prefix: str = "keyloom:", replica: str = "", worker: int = 0):
        self.url = url
        self.prefix = prefix
        self.replica = replica_name(replica)
        self.worker = worker
        # who wrote something: replica name, worker number, process id and a random tag (a restarted replica is a
        # new writer, and so is a second instance in one process, as in the tests)
        self.writer = f"{self.replica}/{worker}/{os.getpid()}/{secrets.token_hex(3)}"
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, retry_on_timeout=False, decode_responses=False,
            health_check_interval=0)
        self.up = False
        self.downs = 0             # times Redis went away while serving
        self._handlers: dict[str, list[Handler]] = {}
        self._on_return: list[Callable[[], Awaitable[None]]] = []
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._closing = False

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- reachability --------------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Reach Redis within `timeout` seconds or raise StartupFailure-ready RuntimeError (one line, no secret)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        last: BaseException | None = None
        while True:
            try:
                await asyncio.wait_for(self.client.ping(), timeout=max(0.5, min(3.0, end - loop.time())))
                break
            except RedisError as e:
                if isinstance(e, REFUSALS) or not isinstance(e, DOWN_ERRORS):  # waiting will not help
                    raise RuntimeError(f"Redis at {safe_url(self.url)} refused Keyloom: {_reason(e)}. Check "
                                       "REDIS_URL (password, database number).") from None
                last = e
            except DOWN_ERRORS as e:
                last = e
            if loop.time() >= end:
                raise RuntimeError(
                    f"Redis at {safe_url(self.url)} cannot be reached ({_reason(last)}) after {timeout:g}s "
                    "(REDIS_START_TIMEOUT). A replica does not start without the shared state, where it would "
                    "count alone: start Redis, or unset REDIS_URL to run one process on SQLite.") from None
            await asyncio.sleep(RETRY_EVERY)
        self.up = True
        self._listener = asyncio.ensure_future(self._listen())

    async def close(self) -> None:
        """Stop listening, let the notices under way go out, close the connections. Each wait is bounded: seen
        once, after Redis was killed and restarted, the cancelled listener took over 10 s to end (most likely in
        redis-py's clean-up of its subscription, which is shielded from cancellation; the listener now skips it
        when closing). Closing the client's connections ends such a wait, so the client is closed after at most
        CLOSE_WAIT whatever the listener does, and the listener is given another CLOSE_WAIT afterwards. An overrun
        is said with the stop's own words (server/shutdown.py), which the tests fail on."""
        self._closing = True
        listener = self._listener
        if listener is not None:
            listener.cancel()
            done, _ = await asyncio.wait({listener}, timeout=CLOSE_WAIT)
            if not done:
                log.warning("closing Redis: the listener for change notices %s %gs of its cancellation (it waits "
                            "in %s); closing the connections under it", OVERRAN, CLOSE_WAIT, where(listener))
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=CLOSE_WAIT)
        await self.client.aclose()
        if listener is not None and not listener.done():
            await asyncio.wait({listener}, timeout=CLOSE_WAIT)

    def went_down(self, e: BaseException | None = None) -> None:
        """Say once that Redis went away; stores keep what they hold and write it when it is back."""
        if self.up and not self._closing:
            self.downs += 1
            log.warning("Redis at %s cannot be reached (%s): serving from memory with the last known state; "
                        "counts are kept and written when it is back", safe_url(self.url), _reason(e))
        self.up = False

    def fine(self) -> None:
        """An operation on Redis just worked: if Redis had been away (or refusing), it is back."""
        if not self.up and not self._closing and self._listener is not None:  # opened to serve (not a tool)
            task = asyncio.ensure_future(self._came_back())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def explain(self, e: BaseException) -> str:
        """One start-up line for a failure of Redis after it answered the first PING (rights, data)."""
        return (f"Redis at {safe_url(self.url)} failed while Keyloom read its state ({_reason(e)}). Check that the "
                "REDIS_URL user may read and write (hashes, streams, scripts, pub/sub) and that Redis has room.")

    async def _came_back(self) -> None:
        was_down = not self.up
        self.up = True
        if was_down:
            log.warning("Redis at %s is back: writing what was kept and reading what changed meanwhile",
                        safe_url(self.url))
            for fn in list(self._on_return):
                try:
                    await fn()
                except RELOAD_FAILURES as e:  # away again, or refusing: said once
                    self.went_down(e)
                    return
                except Exception:
                    log.exception("reloading shared state after Redis came back failed")

    def on_return(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Called (in registration order) each time Redis is reachable again after being down."""
        self._on_return.append(fn)

    async def call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """An admin-path operation on Redis: its result, or a 503 saying Redis is away (and the replica knows)."""
        try:
            result = await fn()
        except RUNTIME_ERRORS as e:
            self.went_down(e)
            raise StoreUnavailable(what) from None
        self.fine()
        return result

    # -- change notices between replicas -------------------------------------------------------

    def subscribe(self, kind: str, handler: Handler) -> None:
        """`handler(data)` runs when another process publishes `kind` (never for this process's own notices)."""
        self._handlers.setdefault(kind, []).append(handler)

    def publish(self, kind: str, data: Any = None) -> None:
        """Tell the other processes at once (fire and forget: if it is lost, their read-back heals it)."""
        if not self.up:
            return
        message = ujson.dumps({"from": self.writer, "kind": kind, "data": data})
        task = asyncio.ensure_future(self._publish(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, message: str) -> None:
        try:
            await self.client.publish(self.key("events"), message)
        except DOWN_ERRORS as e:
            self.went_down(e)
        except RedisError:
            log.exception("publishing a change notice failed")

    async def _listen(self) -> None:
        """Receive notices; on a lost connection, retry until Redis answers, then let every store catch up."""
        channel = self.key("events")
        while not self._closing:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                await self.client.ping()
                await self._came_back()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        await pubsub.ping()  # notices a dead connection even when nobody publishes
                        continue
                    await self._dispatch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except DOWN_ERRORS as e:
                self.went_down(e)
            except RedisError as e:
                self.went_down(e)
            finally:
                if not self._closing:  # when closing, the client's close ends the subscription's connection
                    try:
                        await pubsub.aclose()
                    except Exception:  # the connection is gone already
                        pass
            await asyncio.sleep(RETRY_EVERY)

    async def _dispatch(self, raw: Any) -> None:
        try:
            message = ujson.loads(raw)
            if not isinstance(message, dict) or message.get("from") == self.writer:
                return
            handlers = self._handlers.get(str(message.get("kind")), ())
        except (ValueError, TypeError):
            return
        for handler in handlers:
            try:
                result = handler(message.get("data"))
                if asyncio.iscoroutine(result):
                    await result
            except DOWN_ERRORS:
                raise
            except Exception:
                log.exception("applying a change notice (%s) failed", message.get("kind"))


def _reason(e: BaseException | None) -> str:
    """An exception as a short phrase, without anything of REDIS_URL in it."""
    if e is None:
        return "no answer"
    text = str(e) or type(e).__name__
    return text.split("\n", 1)[0][:200]
