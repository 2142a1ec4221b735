"""Generated from conf/settings.toml by `python -m server.settings --write-readmes`; do not edit.

Each setting as a typed attribute of Settings, for the type checker only: a misspelt setting (or one
used as the wrong type) fails `mypy`. A test keeps this file in step with conf/settings.toml."""
from __future__ import annotations


class SettingFields:
    GEMINI_API_KEYS: list[str]
    PASSWORD: str
    HOST: str
    PORT: int
    GEMINI_BASE_URL: str
    DATA_DIR: str
    REDIS_URL: str
    REDIS_PREFIX: str
    REDIS_START_TIMEOUT: float
    KEY_ENCRYPTION_SECRET: str
    WORKERS: int
    REPLICA_NAME: str
    FAKE_STREAMING: bool
    FAKE_STREAMING_INTERVAL: float
    MAX_RETRY_NUM: int
    MAX_EMPTY_RESPONSES: int
    BLOCKED_MODELS: list[str]
    TZ: str
    UPSTREAM_CONNECT_TIMEOUT: float
    UPSTREAM_TIMEOUT: float
    UPSTREAM_STREAM_IDLE_TIMEOUT: float
    REQUEST_DEADLINE: float
    UPSTREAM_PROXY: str
    UPSTREAM_PROXIES: list[str]
    MODELS_REFRESH_INTERVAL: float
    MAX_REQUEST_BODY_MB: float
    MAX_CONNECTIONS: int
    MAX_CONNECTIONS_PER_CLIENT: int
    CLIENT_HEADER_TIMEOUT: float
    IMAGE_OUTPUT: str
    IMAGE_FETCH_MAX_MB: float
    IMAGE_FETCH_TIMEOUT: float
    IMAGE_FETCH_ALLOW_PRIVATE: bool
    IMAGE_FETCH_MAX_IMAGES: int
    IMAGE_FETCH_TOTAL_MB: float
    ALLOWED_ORIGINS: list[str]
    LOG_LEVEL: str
    ACCESS_LOG: bool
    API_KEY_DAILY_LIMIT: int
    MODEL_DAILY_LIMITS: dict[str, int]
    KEY_MIN_INTERVAL_MS: int
    KEY_RECHECK_MINUTES: float
    QUOTA_RESET_TZ: str
    FLUSH_INTERVAL: float
    SHUTDOWN_GRACE: float
    CONCURRENT_REQUESTS: int
    INCREASE_CONCURRENT_ON_FAILURE: int
    MAX_CONCURRENT_REQUESTS: int
    MAX_REQUESTS_PER_MINUTE: int
    MAX_REQUESTS_PER_DAY_PER_IP: int
    TRUST_PROXY_HEADERS: int | str
    REQUEST_LOG_DAYS: int
    REQUEST_LOG_MAX_ROWS: int
    MAX_CONVERSATIONS: int
    MAX_CONVERSATIONS_MB: float
    RESPONSES_STORE_DAYS: float
    RESPONSES_STORE_MB: float
    CLIENT_KEYS: str
    MODEL_FALLBACKS: str
    MODEL_ALIASES: dict[str, str]
    UVLOOP: bool
    EXTRA_MODELS: list[str]
    MAX_MESSAGES: int
    ADMIN_PASSWORD: str
    WEB_PASSWORD: str
    DASHBOARD_PATH: str
    ADMIN_SESSION_HOURS: float
    ADMIN_LOGIN_ATTEMPTS: int
    EMBEDDING_MODEL_MAP: dict[str, str]
    WHITELIST_USER_AGENT: list[str]
    WHITELIST_MODELS: list[str]
    SEARCH_MODE: bool
    SEARCH_PROMPT: str
    SHOW_THINKING: bool
    RANDOM_STRING: bool
    RANDOM_STRING_LENGTH: int
    INFLIGHT_SHARING: bool
    CACHE_EXPIRY_TIME: int
    MAX_CACHE_ENTRIES: int
    NONSTREAM_KEEPALIVE: bool
    NONSTREAM_KEEPALIVE_INTERVAL: float
    ENABLE_VERTEX: bool
    GOOGLE_CREDENTIALS_JSON: str
    VERTEX_EXPRESS_API_KEY: list[str]
    VERTEX_LOCATION: str
    VERTEX_PROJECT_ID: str
    VERTEX_BASE_URL: str
    VERTEX_MODELS: list[str]
    VERTEX_MODEL_PREFIX: str
    PROVIDERS_FILE: str
    PROVIDERS: str
    METRICS: bool
    METRICS_ALLOW: list[str]
    ALERT_WEBHOOK_URL: str
    ALERT_WEBHOOK_MINUTES: int
