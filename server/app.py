"""The application object and its routes.

`Keyloom` holds every piece of state (settings, key pool, upstream client, model
catalog, services); handlers receive it and nothing else. Nothing here is a
module global, so tests run several instances side by side in one process.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tornado.web
from redis.exceptions import RedisError
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets

from .admin.audit import Audit
from .admin.service import AdminService
from .admin.sessions import CHAT_COOKIE, COOKIE, SignedSessions
from .alerts import Alerts
from .auth import ADMIN_PASSWORD_FILE, Gate, load_or_create_password
from .catalog import ModelCatalog
from .chat import ChatService
from .client_keys import ClientKeys
from .client_keys import parse_config as parse_client_keys
from .clock import Clock, SystemClock
from .conversations import ConversationStore
from .dispatch import Dispatcher
from .embeddings import EmbeddingService
from .handlers.admin import STATIC, AssetHandler, admin_routes
from .handlers.base import SMALL_BODY, NotFoundHandler
from .handlers.chat import ChatCompletionsHandler
from .handlers.embeddings import EmbeddingsHandler
from .handlers.health import HealthHandler
from .handlers.media import ImageEditsHandler, ImagesHandler, SpeechHandler
from .handlers.messages import CountTokensHandler, MessagesHandler
from .handlers.metrics import MetricsHandler
from .handlers.models import ModelHandler, ModelsHandler
from .handlers.native import NativeCallHandler, NativeModelsHandler
from .handlers.pages import IndexHandler, OpenApiHandler
from .handlers.playground import PLAYGROUND_ROUTES
from .handlers.responses import ResponsesHandler, StoredResponseHandler
from .keepalive import KeepaliveTicker
from .limits import ClientAddresses, ClientLimits, ClientSlots, client_key, proxy_hops
from .media import MediaService
from .metrics import AddressList, Metrics, RequestMetrics
from .native import NativeService
from .ops import OpsObserver
from .pool.keys import KeyPool
from .pool.quota import DailyLimits, MemoryUsage, QuotaDay
from .pool.recheck import Rechecker
from .providers.config import Providers
from .providers.config import load as load_providers
from .providers.forward import Forwarder
from .providers.openai_compat import OpenAICompatClient
from .providers.router import Router, Upstream
from .providers.vertex import VertexClient, masked_secrets
from .redact import Redactor
from .render import Renderer
from .reuse import Reuse
from .settings import Settings
from .shutdown import LAST_WRITE_WITHIN, STEP_WITHIN, Steps
from .store.counters import CounterStore
from .store.db import DB_FILE, Database, DatabaseUnusable, explain
from .store.errors import StoreDown
from .store.flush import Flusher
from .store.history import History
from .store.lock import DataDirLock
from .store.redis_backend import DOWN_ERRORS, RedisBackend, StoreUnavailable, url_secrets
from .store.redis_counters import RedisCounters
from .store.requestlog import RequestLog
from .store.stores import Needs, Stores, redis_stores, sqlite_stores
from .stored_responses import ResponseStore
from .throttle import CredentialThrottle
from .upstream.egress import Egress
from .upstream.gemini import GeminiClient
from .upstream.http import HttpClient

log = logging.getLogger("keyloom")
# what reading the shared state at start can raise after Redis answered its first PING (rights, room, a drop)
REDIS_START_FAILURES: tuple[type[BaseException], ...] = (RedisError, StoreDown, StoreUnavailable, *DOWN_ERRORS)
access_log = logging.getLogger("keyloom.access")
_SLASHES = re.compile(r"/{2,}")
MAX_HEADER_BYTES = 16 * 1024  # a request head larger than this is refused (Tornado's default is 64 KiB)
BODY_CHUNK = 16 * 1024        # bodies are read (and passed to handlers) in pieces of at most this


class WebApp(tornado.web.Application):
    """Tornado application that carries the Keyloom object for its handlers and forgives doubled
    slashes (`/v1//chat/completions`, which SillyTavern sends when its base URL ends with a slash)."""

    def __init__(self, keyloom: Keyloom, handlers: list[Any], **settings: Any):
        self.keyloom = keyloom
        super().__init__(handlers, **settings)

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        if "//" in request.path:
            request.path = _SLASHES.sub("/", request.path)
        return super().find_handler(request, **kwargs)


class LimitedHTTPServer(HTTPServer):
    """Refuses connections beyond MAX_CONNECTIONS, and beyond MAX_CONNECTIONS_PER_CLIENT from one address
    (`slots`, None behind a trusted proxy, where every connection is the proxy's and the cap is applied
    per forwarded client to requests instead), rather than holding them."""

    def initialize(self, *args: Any, max_connections: int = 10000,
                   slots: ClientSlots | None = None, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.slots = slots
        self.open_connections = 0
        self.refused_connections = 0
        self._clients: dict[int, str] = {}  # id(stream) → client, for the connections counted in `slots`

    def handle_stream(self, stream: Any, address: Any) -> None:
        if self.open_connections >= self.max_connections:
            self.refused_connections += 1
            stream.close()
            return
        if self.slots is not None and isinstance(address, tuple):
            client = client_key(address[0])
            if not self.slots.take(client):
                self.refused_connections += 1
                stream.close()
                return
            self._clients[id(stream)] = client
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: Any) -> None:
        self.open_connections -= 1
        if self.slots is not None:
            client = self._clients.pop(id(server_conn.stream), None)
            if client is not None:
                self.slots.give(client)
        super().on_close(server_conn)


API_ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    # Tornado tries these in order: the busiest first, each route costs every later request a regex.
    (r"/(?:v1/)?chat/completions/?", ChatCompletionsHandler),
    (r"/(?:v1/)?embeddings/?", EmbeddingsHandler),
    (r"/(?:v1/)?responses/?", ResponsesHandler),
    (r"/(?:v1/)?messages/?", MessagesHandler),
    (r"/(?:v1/)?messages/count_tokens/?", CountTokensHandler),
    (r"/(?:v1/)?responses/([^/]+)/?", StoredResponseHandler),
    (r"/(?:v1/)?images/generations/?", ImagesHandler),
    (r"/(?:v1/)?images/edits/?", ImageEditsHandler),
    (r"/(?:v1/)?audio/speech/?", SpeechHandler),
    (r"/(?:gemini/)?v1(?:beta)?/models/([^/:]+):([A-Za-z]+)", NativeCallHandler),  # before /v1/models/{id}
    (r"/(?:v1/)?models/?", ModelsHandler),
    (r"/(?:v1/)?models/(.+?)/?", ModelHandler),
    (r"/(?:gemini/)?v1beta/models/?()", NativeModelsHandler),
    (r"/(?:gemini/)?v1beta/models/([^/:]+)", NativeModelsHandler),
    (r"/health/?", HealthHandler),
    (r"/metrics", MetricsHandler),
    (r"/openapi\.json", OpenApiHandler),
]


def routes(dashboard_path: str) -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """The API, the dashboard at DASHBOARD_PATH, and the plain status page at / when the dashboard is elsewhere."""
    base = dashboard_path.rstrip("/")
    found: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        *API_ROUTES, *PLAYGROUND_ROUTES, (r"/chat/assets/([a-z0-9\-]+\.[a-z]+)", AssetHandler), *admin_routes(base)]
    if base:
        found.append((r"/", IndexHandler))
    return found


class StartupError(RuntimeError):
    """Keyloom cannot start; the message is one line saying what to do."""


class Keyloom:
    def __init__(self, settings: Settings, *, password: str, data_dir: Path, clock: Clock | None = None,
                 demo: bool = False, redactor: Redactor | None = None, env: Mapping[str, str] | None = None,
                 providers: Providers | None = None, admin_password: str | None = None, worker: int = 0):
        """`admin_password`: the dashboard's (start-up resolves it); None → ADMIN_PASSWORD, WEB_PASSWORD, else
        the one generated into DATA_DIR. Never the client password unless the owner set both alike."""
        self.settings = settings
        self.password = password
        self.data_dir = data_dir
        self.clock = clock or SystemClock()
        self.demo = demo
        self.worker = worker  # WORKERS>1: this process's number, 0..N-1 (server/workers.py); else 0
        self.started_mono = self.clock.monotonic()
        self.in_flight = 0
        if admin_password is None:
            admin_password = settings.ADMIN_PASSWORD or settings.WEB_PASSWORD or \
                load_or_create_password("", data_dir, ADMIN_PASSWORD_FILE)[0]
        self.admin_password = admin_password
        self.lock = DataDirLock(data_dir)
        self.throttle = CredentialThrottle(self.clock, lambda: self.settings.ADMIN_LOGIN_ATTEMPTS)
        self.gate = Gate(self.throttle)
        self.dashboard_base = settings.DASHBOARD_PATH.rstrip("/")
        self._static: dict[str, bytes] = {}
        get_settings = lambda: self.settings  # noqa: E731 - live settings can be swapped in later
        self.quota_day = QuotaDay(self.clock, settings.QUOTA_RESET_TZ)
        self.pool = KeyPool(settings.GEMINI_API_KEYS, self.clock, self.quota_day, DailyLimits(get_settings),
                            MemoryUsage(self.quota_day.today()), display_tz=settings.TZ)
        self.client_limits = ClientLimits(get_settings, self.quota_day, self.clock)
        self.proxy_hops = proxy_hops(settings.TRUST_PROXY_HEADERS, os.environ if env is None else env)
        self.addresses = ClientAddresses(self.proxy_hops)
        self.slots = ClientSlots(lambda: self.settings.MAX_CONNECTIONS_PER_CLIENT)
        self.request_log = RequestLog()
        self.db = Database(data_dir / DB_FILE)  # SQLite mode; never opened when REDIS_URL is set
        self.redactor = redactor or Redactor()
        # REDIS_URL: every process with that URL shares one pool (server/store/redis_backend.py); else SQLite
        self.redis: RedisBackend | None = None
        if settings.REDIS_URL:
            self.redactor.add([*url_secrets(settings.REDIS_URL), settings.KEY_ENCRYPTION_SECRET])
            self.redis = RedisBackend(settings.REDIS_URL, settings.REDIS_PREFIX, settings.REPLICA_NAME, worker)
        needs = Needs(settings, get_settings, self.clock, data_dir, lambda: self.password, lambda: self.admin_password,
                      self.apply_settings)
        # every stored concept, one typed property each (server/store/stores.py): SQLite or Redis
        self.stores: Stores = redis_stores(self.redis, needs) if self.redis else sqlite_stores(self.db, needs)
        self.counters: CounterStore = self.stores.counters
        # what the dashboard reads about the past: the whole cluster's in Redis mode (server/store/history.py)
        self.history: History = self.stores.history
        self.audit = Audit(self.db, self.clock, self.redactor, self.history)
        self.flusher = Flusher(self.counters, self.pool, self.client_limits, self.request_log, get_settings,
                               self.clock, self.audit)
        configured_keys = parse_client_keys(settings.CLIENT_KEYS)
        self.redactor.add([key for key, _ in configured_keys])
        # the dashboard's client keys: in Redis (shared, changes announced to every replica) or SQLite
        self.client_keys = ClientKeys(self.stores.client_keys, self.clock, get_settings, self.quota_day,
                                      configured_keys)
        self.client_limits.client_keys = self.client_keys
        self.flusher.client_keys = self.client_keys
        self.audit.write = self.flusher.flush
        # per-minute limits: one set of counts for the global limit and the client keys' rpm
        self.client_keys.minutes = self.client_limits.minutes
        if isinstance(self.counters, RedisCounters):  # a key leaving play reaches the others at once
            self.pool.on_change = self.flusher.soon
            self.pool.on_near_limit = self.flusher.soon
            self.counters.on_remote_change = self.flusher.others_changed
            self.client_limits.minutes.enabled = True  # per-minute limits count the other processes too
        if demo:
            for k in self.pool.keys:
                k.source = "demo"
        self.redactor.add([*self.pool.secrets(), password, self.admin_password])
        self.http = HttpClient(connect_timeout=settings.UPSTREAM_CONNECT_TIMEOUT, proxy=settings.UPSTREAM_PROXY)
        # UPSTREAM_PROXIES: each Gemini / Vertex AI key through a proxy of its own (server/upstream/egress.py)
        self.egress = Egress(settings.UPSTREAM_PROXIES, self.clock, self.http,
                             connect_timeout=settings.UPSTREAM_CONNECT_TIMEOUT)
        self.redactor.add([*(self.http.proxy.secrets() if self.http.proxy else ()), *self.egress.secrets()])
        if self.redis is not None and self.egress:  # a proxy resting on one process rests on all
            redis_ = self.redis
            self.egress.on_change = lambda health: redis_.publish("proxy", health)
            self.redis.subscribe("proxy", self.egress.apply_health)
        self.gemini = GeminiClient(self.http, settings.GEMINI_BASE_URL, timeout=settings.UPSTREAM_TIMEOUT,
                                   stream_idle_timeout=settings.UPSTREAM_STREAM_IDLE_TIMEOUT, redact=self.redactor,
                                   egress=self.egress)
        self.dispatcher = Dispatcher(self.pool, self.gemini, get_settings)
        self.catalog = ModelCatalog(self.dispatcher, get_settings, self.clock)
        self.providers = providers if providers is not None else load_providers(settings)
        self.router = self._build_router(get_settings)
        self.forwarder = Forwarder(self.client_limits, get_settings)
        self.keepalive = KeepaliveTicker(lambda: self.settings.FAKE_STREAMING_INTERVAL)
        self._wire_operations(get_settings)
        self.reuse = Reuse(get_settings, self.clock)
        self.chat = ChatService(self.catalog, self.dispatcher, self.http, self.client_limits, get_settings,
                                self.clock, self.reuse)
        self.native = NativeService(self.catalog, self.dispatcher, self.client_limits, get_settings)
        self.embeddings = EmbeddingService(self.catalog, self.dispatcher, self.client_limits, get_settings)
        self.media = MediaService(self.catalog, self.dispatcher, self.client_limits, get_settings, self.clock)
        self.admin = AdminService(self, settings, live=self.stores.live, sessions=self.stores.admin_sessions,
                                  keys=self.stores.keys)
        # pacing and background re-checks of keys (pool/keys.py, pool/recheck.py), both read live
        self.pool.pacing = lambda: self.settings.KEY_MIN_INTERVAL_MS / 1000.0
        self.rechecker = Rechecker(self.pool, self.client_for, lambda: self.settings.KEY_RECHECK_MINUTES * 60.0,
                                   self.clock, self.redactor, poll=min(1.0, settings.FLUSH_INTERVAL))
        self.chat_sessions: SignedSessions = self.stores.chat_sessions
        # saved conversations and stored Responses: the whole cluster's in Redis mode
        self.conversations: ConversationStore = self.stores.conversations
        self.responses: ResponseStore = self.stores.responses
        self.renderer = Renderer()  # its worker process starts on the first render, not here
        self.web = WebApp(self, routes(settings.DASHBOARD_PATH), default_handler_class=NotFoundHandler,
                          log_function=self._log_request,
                          compress_response=False)
        self.server: LimitedHTTPServer | None = None
        self.port: int | None = None
        self._refresher: PeriodicCallback | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def _build_router(self, get_settings: Any) -> Router:
        """Vertex AI and OpenAI-compatible upstreams: their credentials join the pool (tagged with the
        provider), each gets a dispatcher of its own, the router maps model ids to them."""
        s, p = self.settings, self.providers
        vertex = None
        if p.vertex is not None:
            self.redactor.add(masked_secrets(p.vertex))
            client = VertexClient(self.http, p.vertex, self.clock, timeout=s.UPSTREAM_TIMEOUT,
                                  stream_idle_timeout=s.UPSTREAM_STREAM_IDLE_TIMEOUT, redact=self.redactor,
                                  egress=self.egress)
            for key in client.keys():
                self.pool.add_key(key)
            vertex = (p.vertex, client, Dispatcher(self.pool, client, get_settings, "vertex"))
        upstreams = []
        for cfg in p.openai:
            self.redactor.add(cfg.keys)
            compat = OpenAICompatClient(self.http, cfg, self.redactor)
            for key in compat.keys():
                self.pool.add_key(key)
            self.pool.limits.per_provider[cfg.name] = cfg.daily_limit
            upstreams.append(Upstream(cfg, compat, Dispatcher(self.pool, compat, get_settings, cfg.name)))
        return Router(self.catalog, self.pool, vertex, upstreams)

    def _wire_operations(self, get_settings: Any) -> None:
        """GET /metrics and the alert webhook (server/ops.py): the pool's and every dispatcher's hooks."""
        self.metrics = RequestMetrics()
        self.metrics.enabled = self.settings.METRICS
        self.metrics_registry = Metrics(self)
        self.metrics_allow = AddressList(lambda: self.settings.METRICS_ALLOW)
        self.alerts = Alerts(get_settings, self.clock, self.redactor)
        self.ops = OpsObserver(self.pool, self.metrics, self.alerts)
        self.pool.on_event = self.ops.pool_event
        for d in (self.dispatcher, self.router.vertex[2] if self.router.vertex else None,
                  *(u.dispatcher for u in self.router.upstreams)):
            if d is not None:
                d.observer = self.ops

    def page_session(self, get_cookie: Any) -> Any:
        """The browser's session: the chat playground's, else the dashboard's (either may use /chat and the
        conversation API)."""
        return self.chat_sessions.find(get_cookie(CHAT_COOKIE)) or self.admin.sessions.find(get_cookie(COOKIE))

    def client_for(self, key: Any) -> Any:
        """The upstream client a credential is used with (for key tests)."""
        if key.provider == "gemini":
            return self.gemini
        if key.provider == "vertex" and self.router.vertex is not None:
            return self.router.vertex[1]
        for u in self.router.upstreams:
            if u.cfg.name == key.provider:
                return u.client
        return self.gemini

    def apply_settings(self, settings: Settings) -> None:
        """Put new settings in force (a change on the dashboard). Most parts read `self.settings` on each
        use; the few that copied a value at start are updated here."""
        old, self.settings = self.settings, settings
        for client in (self.gemini, self.router.vertex[1] if self.router.vertex else None):
            if client is not None:
                client.timeout = settings.UPSTREAM_TIMEOUT
                client.stream_idle_timeout = settings.UPSTREAM_STREAM_IDLE_TIMEOUT
        self.metrics.enabled = settings.METRICS
        if settings.LOG_LEVEL != old.LOG_LEVEL:
            logging.getLogger().setLevel(settings.LOG_LEVEL)

    def static_file(self, name: str) -> bytes:
        """A file of the page, read once."""
        data = self._static.get(name)
        if data is None:
            data = self._static[name] = (STATIC / name).read_bytes()
        return data

    def _log_request(self, handler: tornado.web.RequestHandler) -> None:
        if not self.settings.ACCESS_LOG:
            return
        status = handler.get_status()
        level = logging.INFO if status < 500 else logging.WARNING
        if access_log.isEnabledFor(level):
            r = handler.request
            # r.path never holds the query string, where hajimi-style clients put ?key=
            access_log.log(level, "%d %s %s %s %.1fms", status, r.method, r.path, r.remote_ip,
                           1000.0 * r.request_time())

    async def start(self, port: int | None = None, host: str | None = None) -> int:
        """Take DATA_DIR, bind the port (0 picks a free one), open the database and read back today's state,
        then serve and start background work; returns the port. Each failure raises StartupError (or
        DataDirBusy, DatabaseUnusable, SchemaTooNew) with one clear line, after closing what was opened:
        a half-started process must exit, never linger."""
        s = self.settings
        try:
            if self.redis is None:  # one process per DATA_DIR on SQLite; with Redis, DATA_DIR holds no state
                self.lock.acquire()
        except OSError as e:
            raise StartupError(f"cannot write DATA_DIR {self.data_dir}: {e.strerror or e}. Make it writable, or set "
                               "DATA_DIR to a writable directory.") from None
        sockets: list[socket.socket] = []
        where = (s.PORT if port is None else port, host if host is not None else s.HOST)
        # WORKERS: each process binds the port itself (SO_REUSEPORT), and only once it can serve: a worker bound
        # while it still waits for Redis would take its share of new connections and leave them hanging
        reuse_port = s.WORKERS > 1
        try:
            if not reuse_port:
                sockets = self._bind(*where)
            if self.redis is not None:
                try:
                    await self.redis.open(s.REDIS_START_TIMEOUT)
                except RuntimeError as e:
                    raise StartupError(str(e)) from None
            else:
                await self.db.open()
            try:
                self.apply_settings(await self.admin.load())
                await self.chat_sessions.load()
                await self.flusher.load()
                await self.conversations.load()
                await self.responses.load()
                await self.client_keys.load()
            except sqlite3.Error as e:
                raise DatabaseUnusable(explain(e, self.db.path)) from None
            except REDIS_START_FAILURES as e:
                if self.redis is None:
                    raise
                raise StartupError(self.redis.explain(e)) from None
            if reuse_port:
                sockets = self._bind(*where, reuse_port=True)
        except BaseException:
            for sock in sockets:
                sock.close()
            await self.db.close()
            if self.redis is not None:
                await self.redis.close()
            self.lock.release()
            raise
        self.server = LimitedHTTPServer(
            self.web, max_connections=s.MAX_CONNECTIONS, slots=self.slots if self.proxy_hops <= 0 else None,
            xheaders=False, idle_connection_timeout=s.CLIENT_HEADER_TIMEOUT, body_timeout=120,
            # every handler streams its body and raises this after authenticating (handlers/base.py)
            max_body_size=SMALL_BODY, max_header_size=MAX_HEADER_BYTES, chunk_size=BODY_CHUNK,
            max_buffer_size=MAX_HEADER_BYTES + 2 * BODY_CHUNK)
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        if self.pool.has("gemini"):
            self._spawn(self.catalog.refresh())
        if self.router.upstreams:
            self._spawn(self.router.refresh())
        self._refresher = PeriodicCallback(self._refresh_models, s.MODELS_REFRESH_INTERVAL * 1000)
        self._refresher.start()
        self.flusher.start()
        self.rechecker.start()
        return self.port

    @staticmethod
    def _bind(port: int, host: str, reuse_port: bool = False) -> list[socket.socket]:
        try:
            return bind_sockets(port, host, family=socket.AF_UNSPEC, backlog=1024, reuse_port=reuse_port)
        except socket.gaierror as e:
            raise StartupError(f"cannot listen on HOST={host!r}: {e.strerror}. Set HOST to an address of this "
                               "machine, such as 0.0.0.0 (all) or 127.0.0.1 (this machine only).") from None
        except OSError as e:
            hint = {errno.EADDRINUSE: "another program (maybe another Keyloom) is using this port: stop it or "
                                      "set PORT to a free one",
                    errno.EADDRNOTAVAIL: "HOST is not an address of this machine: use 0.0.0.0 or 127.0.0.1",
                    errno.EACCES: "ports below 1024 need privileges: set PORT to 1024 or above"}.get(
                e.errno or 0, "check HOST and PORT")
            raise StartupError(f"cannot listen on {host}:{port}: {e.strerror or e}; {hint}.") from None

    def _refresh_models(self) -> None:
        if self.pool.has("gemini"):
            self._spawn(self.catalog.refresh())
        if self.router.upstreams:
            self._spawn(self.router.refresh())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, grace: float = 10.0) -> bool:
        """Stop accepting, give in-flight requests up to `grace` seconds, write what is left, close. Every step
        after the grace is bounded (server/shutdown.py): → False if one overran and was left unfinished."""
        steps = Steps()
        if self._refresher is not None:
            self._refresher.stop()
        if self.server is not None:
            self.server.stop()
            deadline = time.monotonic() + grace  # real time: this is an actual wait
            while self.in_flight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            try:
                await asyncio.wait_for(self.server.close_all_connections(), timeout=1.0)
            except (TimeoutError, Exception):
                pass
        # let them end (and close what they had open) before the clients they use are closed below
        await steps.cancel("the background tasks", self._background, STEP_WITHIN)
        self.keepalive.stop()
        try:
            await steps.run("stopping the key tests", self.admin.tests.stop(), STEP_WITHIN)
            await steps.run("stopping the re-checks", self.rechecker.stop(), STEP_WITHIN)
            await steps.run("closing the dispatcher", self.dispatcher.close(), STEP_WITHIN)
            await steps.run("storing the last answers", self.responses.drain(), STEP_WITHIN)
            await steps.run("the last write of the counters", self._last_write(), LAST_WRITE_WITHIN)
            await steps.run("closing the renderer", self.renderer.close(), STEP_WITHIN)
            await steps.run("closing the alerts", self.alerts.close(), STEP_WITHIN)
        finally:
            await steps.run("closing the database", self.db.close(), STEP_WITHIN)
            if self.redis is not None:
                await steps.run("closing the connections to Redis", self.redis.close(), STEP_WITHIN)
            if not steps.leftovers:  # else a left write may still land: DATA_DIR is freed by the exit instead
                self.lock.release()  # after the last write: another process may take DATA_DIR from here on
            await steps.run("closing the HTTP clients", self.http.close(), STEP_WITHIN)
            await steps.run("closing the proxies", self.egress.close(), STEP_WITHIN)
        return not steps.leftovers

    async def _last_write(self) -> None:
        try:
            await self.flusher.stop()
        except StoreDown:
            log.warning("stopping while Redis is away: what was counted since Redis went away is not written")
