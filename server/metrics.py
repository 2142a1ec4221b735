"""GET /metrics: Keyloom's state in the Prometheus text format.

The request path pays as little as possible. Nothing here is a `prometheus_client` Counter or Histogram
updated per request (each takes a lock and a labelled child lookup); instead:

- per client request, `RequestMetrics.observe` is called once, from `LoggedHandler.on_finish` (where the
  request log row is written): one dict increment and one bisect per histogram;
- per upstream attempt, `RequestMetrics.attempt` is called once from the dispatcher: one dict increment;
- everything else (keys by state, quota used and left, in-flight requests, held streams, keep-alives sent)
  is read from the state Keyloom already keeps, at scrape time, by `KeyloomCollector`.

The collector turns these plain aggregates into metric families when scraped; `prometheus_client` only does
the exposition (text or OpenMetrics, escaping) from a registry of this instance's own, never the global one,
so several Keyloom instances in one process (the tests) never share a series.

No label ever carries a key: keys are named by their 12-hex fingerprint. Label values that come from clients
(model ids) are bounded: past MAX_SERIES distinct label sets, new ones are counted under model="other".
"""
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import __version__
from .store.redis_backend import replica_name

if TYPE_CHECKING:
    from .app import Keyloom

# Seconds. Gemini answers take from a fraction of a second to minutes (thinking models, long streams).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
MAX_SERIES = 5000  # distinct label sets per counter; beyond it new models are folded into "other"
OTHER = "other"

# The route label, by handler class name (the classes live in server/handlers/; by name, so this module
# imports none of them). A class not named here falls back to the first segment of its path.
ROUTES = {
    "ChatCompletionsHandler": "chat",
    "ResponsesHandler": "responses",
    "MessagesHandler": "messages",
    "CountTokensHandler": "messages",
    "NativeCallHandler": "native",
    "EmbeddingsHandler": "embeddings",
    "ImagesHandler": "images",
    "ImageEditsHandler": "images",
    "SpeechHandler": "speech",
}


def outcome(status: int, client_gone: bool) -> str:
    """ok / 4xx / 429 / 5xx / client_gone: what a dashboard alerts on, in five values."""
    if client_gone:
        return "client_gone"
    if status < 400:
        return "ok"
    if status == 429:
        return "429"
    return "4xx" if status < 500 else "5xx"


class _Histogram:
    """Bucket counts (not cumulative: cumulated at scrape), their sum and count. One bisect per observation."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, c in zip((*(str(b) for b in LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += c
            out.append((bound, float(running)))
        return out


class RequestMetrics:
    """The per-request and per-attempt aggregates: plain dicts, written on the request path, read at scrape."""

    def __init__(self) -> None:
        self.enabled = True  # METRICS=false: nothing is counted (and /metrics is not served)
        # (route, model, provider, client, outcome) → requests
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        # (key fingerprint, provider, model, result) → upstream attempts; result: ok or the failure kind
        self.attempts: dict[tuple[str, str, str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}  # route → total time
        self.first_byte: dict[str, _Histogram] = {}  # route → time to the first event of a stream
        self._routes: dict[type, str] = {}

    def route_of(self, handler_class: type, path: str) -> str:
        route = self._routes.get(handler_class)
        if route is None:
            route = ROUTES.get(handler_class.__name__) or (path.strip("/").split("/") or ["other"])[0] or "other"
            self._routes[handler_class] = route
        return route

    def observe(self, route: str, model: str, provider: str, client: str, status: int, client_gone: bool,
                seconds: float, first_byte: float | None) -> None:
        """One client request has finished (called once, from LoggedHandler.on_finish)."""
        k = (route, model, provider, client, outcome(status, client_gone))
        c = self.requests
        n = c.get(k)
        if n is None:
            if len(c) >= MAX_SERIES:
                k = (route, OTHER, provider, client, k[4])
            n = c.get(k, 0)
        c[k] = n + 1
        h = self.latency.get(route)
        if h is None:
            h = self.latency[route] = _Histogram()
        h.observe(seconds)
        if first_byte is not None:
            f = self.first_byte.get(route)
            if f is None:
                f = self.first_byte[route] = _Histogram()
            f.observe(first_byte)

    def attempt(self, fp: str, provider: str, model: str, result: str) -> None:
        """One upstream attempt has ended: `result` is "ok" or the failure's kind (dispatch.py calls this)."""
        k = (fp, provider, model, result)
        c = self.attempts
        n = c.get(k)
        if n is None:
            if len(c) >= MAX_SERIES:
                k = (fp, provider, OTHER, result)
            n = c.get(k, 0)
        c[k] = n + 1


def observe_request(kl: Keyloom, h: Any) -> None:
    """Count one finished client request: the hook `LoggedHandler.on_finish` calls (`h` is that handler).
    Requests refused before they were parsed (credentials, size) have no trace: model "", provider and
    client "-"."""
    m = kl.metrics
    r = h.request
    seconds = r.request_time()
    route = m.route_of(type(h), r.path)
    ctx = h.ctx
    if ctx is None:
        m.observe(route, "", "-", "-", h.logical_status(), False, seconds, None)
        return
    trace = ctx.trace
    key = kl.pool.get(trace.key_fp) if trace.key_fp else None
    client = getattr(trace, "client", None)
    client = getattr(client, "name", client) or "owner"  # a client key (server/client_keys.py) by its name
    first = getattr(h, "first_event_at", 0.0)  # set by StreamingHandler on its first event
    m.observe(route, trace.model or "", key.provider if key is not None else "-", str(client),
              h.logical_status(), ctx.client_gone and not h.error_status, seconds,
              first - r._start_time if first else None)


class KeyloomCollector(Collector):
    """Builds every family at scrape time from `RequestMetrics` and the live state of one Keyloom."""

    def __init__(self, kl: Keyloom):
        self.kl = kl

    def collect(self) -> Iterator[Any]:
        kl, m = self.kl, self.kl.metrics
        # which process answered the scrape: with replicas or WORKERS>1, each is its own series
        info = GaugeMetricFamily("keyloom_info", "Always 1: this process's version, replica (REPLICA_NAME, else "
                                 "the host name), worker number (WORKERS) and store (sqlite or redis).",
                                 labels=["version", "replica", "worker", "store"])
        info.add_metric([__version__, replica_name(kl.settings.REPLICA_NAME), str(kl.worker),
                         kl.stores.kind], 1)
        yield info
        req = CounterMetricFamily("keyloom_requests", "Client requests that reached a model route, by route, "
                                  "model, provider, client and outcome.",
                                  labels=["route", "model", "provider", "client", "outcome"])
        for rlabels, n in list(m.requests.items()):
            req.add_metric(rlabels, n)
        yield req
        att = CounterMetricFamily("keyloom_upstream_attempts", "Upstream calls, by key fingerprint, provider, "
                                  "model and result (ok or the failure kind).",
                                  labels=["key", "provider", "model", "result"])
        for alabels, n in list(m.attempts.items()):
            att.add_metric(alabels, n)
        yield att
        yield from self._histograms("keyloom_request_duration_seconds",
                                    "Time from the request's arrival to its last byte, by route.", m.latency)
        yield from self._histograms("keyloom_time_to_first_event_seconds",
                                    "Time from a streamed request's arrival to its first event of output "
                                    "(keep-alives not counted), by route.", m.first_byte)
        yield from self._keys()
        yield GaugeMetricFamily("keyloom_in_flight_requests", "Requests being handled now (this scrape not "
                                "counted).", value=max(0, kl.in_flight - 1))
        yield GaugeMetricFamily("keyloom_open_streams", "Event streams held open now (on the keep-alive "
                                "ticker).", value=len(kl.keepalive))
        yield CounterMetricFamily("keyloom_keepalives_sent", "Keep-alives written into quiet streams.",
                                  value=kl.keepalive.sent)

    @staticmethod
    def _histograms(name: str, doc: str, by_route: dict[str, _Histogram]) -> Iterator[Any]:
        h = HistogramMetricFamily(name, doc, labels=["route"])
        for route, hist in list(by_route.items()):
            h.add_metric([route], hist.buckets(), hist.total)
        yield h

    def _keys(self) -> Iterator[Any]:
        pool = self.kl.pool
        states: dict[tuple[str, str], int] = {}
        for key in pool.keys:
            s = pool.state(key)[0]
            states[(key.provider, s)] = states.get((key.provider, s), 0) + 1
        for provider in {k.provider for k in pool.keys}:
            for s in ("active", "resting", "cooling", "exhausted", "disabled"):
                states.setdefault((provider, s), 0)
        g = GaugeMetricFamily("keyloom_keys", "Keys (credentials) by provider and state.",
                              labels=["provider", "state"])
        for (provider, s), n in sorted(states.items()):
            g.add_metric([provider, s], n)
        yield g
        pool.check_day()
        used = GaugeMetricFamily("keyloom_quota_used", "Requests counted against a key for a model today (the "
                                 "quota day of QUOTA_RESET_TZ).", labels=["key", "provider", "model"])
        left = GaugeMetricFamily("keyloom_quota_left", "Requests a key has left for a model today under its "
                                 "daily limit (0 when Google said the day's quota is gone); only where a "
                                 "limit applies.", labels=["key", "provider", "model"])
        for (fp, model), usage in list(pool.usage.rows.items()):
            k = pool.get(fp)
            if k is None:
                continue
            used.add_metric([fp, k.provider, model], usage.requests)
            limit = pool.limits.for_model(model, k.provider)
            exhausted = pool.model_state(k, model)[0] == "exhausted"
            if limit or exhausted:
                left.add_metric([fp, k.provider, model], 0 if exhausted else max(0, limit - usage.requests))
        yield used
        yield left


class Metrics:
    """This instance's registry (never the global default one) and the scrape."""

    def __init__(self, kl: Keyloom):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KeyloomCollector(kl))
        ProcessCollector(namespace="keyloom", registry=self.registry)  # CPU, memory, open files (Linux)

    def render(self, accept: str) -> tuple[bytes, str]:
        """(body, content type): OpenMetrics when the scraper asks for it, else the text format."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class AddressList:
    """METRICS_ALLOW: addresses and CIDR blocks, parsed once per settings value."""

    def __init__(self, setting: Callable[[], Iterable[str]]):
        self.setting = setting
        self._for: Any = None
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def allows(self, address: str) -> bool:
        entries = self.setting()
        if entries is not self._for:
            nets = []
            for e in entries:
                try:
                    nets.append(ipaddress.ip_network(e.strip(), strict=False))
                except ValueError:
                    continue  # a malformed entry opens nothing
            self._for, self._nets = entries, nets
        if not self._nets:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self._nets)
