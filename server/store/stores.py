"""Every stored concept behind one typed property each, and the two ways to build the set.

The storage seam of Keyloom: what the request path counts (`counters`), what the dashboard reads of the past
(`history`), and each kind of record the admin and API paths keep (sessions, live settings, dashboard keys,
client keys, conversations, stored Responses). `sqlite_stores` builds them on the one SQLite file of a single
process; `redis_stores` on a Redis that several processes share. The app builds one of the two (server/app.py)
and hands each service the stores it needs; no other module knows which is in use.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..admin.keystore import KeyStore, SqliteKeyStore
from ..admin.overrides import LiveSettings, SettingsOverrides
from ..admin.sessions import Sessions, SignedSessions
from ..client_keys import ClientKeyStore, SqliteClientKeyStore
from ..clock import Clock
from ..conversations import Conversations, ConversationStore
from ..settings import Settings
from ..stored_responses import ResponseStore, StoredResponses
from .counters import CounterStore, SqliteCounters
from .db import Database
from .history import History, RedisHistory, SqliteHistory
from .redis_backend import RedisBackend
from .redis_client_keys import RedisClientKeyStore
from .redis_conversations import RedisConversations
from .redis_counters import RedisCounters
from .redis_keys import RedisKeyStore
from .redis_responses import RedisStoredResponses
from .redis_sessions import RedisSessions
from .redis_settings import RedisLiveSettings


@dataclass(frozen=True)
class Needs:
    """What the stores need from the application (read live where a value can change)."""

    base: Settings                                  # environment and defaults, as read at start
    settings: Callable[[], Settings]                # the settings in force
    clock: Clock
    data_dir: Path
    password: Callable[[], str]                     # the client PASSWORD (signs the playground's sessions)
    admin_password: Callable[[], str]               # signs the dashboard's sessions
    on_settings: Callable[[Settings], None]         # settings changed elsewhere (Redis mode): put them in force


@dataclass(frozen=True)
class Stores:
    kind: str  # "sqlite" or "redis", for /health and /metrics
    counters: CounterStore
    history: History
    admin_sessions: SignedSessions
    chat_sessions: SignedSessions
    live: SettingsOverrides
    keys: KeyStore
    client_keys: ClientKeyStore
    conversations: ConversationStore
    responses: ResponseStore


def _hours(needs: Needs) -> Callable[[], float]:
    return lambda: needs.settings().ADMIN_SESSION_HOURS


def sqlite_stores(db: Database, needs: Needs) -> Stores:
    hours = _hours(needs)
    return Stores(
        "sqlite", SqliteCounters(db), SqliteHistory(db),
        admin_sessions=Sessions(db, needs.clock, needs.admin_password, hours),
        chat_sessions=Sessions(db, needs.clock, needs.password, hours, table="chat_session",
                               secret_name="chat_session_secret"),
        live=LiveSettings(needs.base, db), keys=SqliteKeyStore(db), client_keys=SqliteClientKeyStore(db),
        conversations=Conversations(db, needs.clock, needs.settings),
        responses=StoredResponses(db, needs.clock, needs.settings))


def redis_stores(backend: RedisBackend, needs: Needs) -> Stores:
    hours = _hours(needs)
    base = needs.base
    return Stores(
        "redis", RedisCounters(backend, needs.settings), RedisHistory(backend),
        admin_sessions=RedisSessions(backend, needs.clock, needs.admin_password, hours),
        chat_sessions=RedisSessions(backend, needs.clock, needs.password, hours, table="chat_session",
                                    secret_name="chat_session_secret"),
        live=RedisLiveSettings(base, backend, needs.data_dir, needs.on_settings),
        keys=RedisKeyStore(backend, base.KEY_ENCRYPTION_SECRET), client_keys=RedisClientKeyStore(backend),
        conversations=RedisConversations(backend, needs.clock, needs.settings),
        responses=RedisStoredResponses(backend, needs.clock, needs.settings))
