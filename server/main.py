"""Start-up: read settings (exit 2 naming each bad variable), set up logging, build Keyloom, serve,
and stop gracefully on SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from . import __version__
from .app import Keyloom, StartupError
from .auth import ADMIN_PASSWORD_FILE, PASSWORD_FILE, load_or_create_password, password_matches, unshared_passwords
from .client_keys import parse_config as parse_client_keys
from .clock import OffsetClock
from .keyshapes import looks_like_gemini_key, valid_key_text
from .legacy import hajimi_env
from .providers.config import load as load_providers
from .redact import RedactingFilter, Redactor, mask
from .settings import Settings, SettingsError, resolve_data_dir
from .shutdown import exit_now, settle, threads_left
from .store.db import DatabaseUnusable, SchemaTooNew
from .store.lock import DataDirBusy, DataDirLock
from .store.redis_backend import url_problem
from .workers import HeldByParent, Supervisor, requires_redis, tag_log, try_port

log = logging.getLogger("keyloom")


def setup_logging(level: str, tz: str, redactor: Redactor) -> None:
    zone = ZoneInfo(tz)

    class Formatter(logging.Formatter):
        _second = -1
        _text = ""

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            second = int(record.created)
            if second != self._second:  # one strftime per second, not per line
                self._second = second
                self._text = datetime.fromtimestamp(second, zone).strftime("%Y-%m-%d %H:%M:%S")
            return self._text

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("tornado.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # At DEBUG aiosqlite logs every statement with its parameters: session secrets, CSRF tokens, the text
    # of saved conversations. Its own debugging is never wanted in Keyloom's log.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)


def _announce_password(password: str, path: Path, admin: bool = False) -> None:
    # Printed straight to the console, once, bypassing the log filter that masks it everywhere else.
    bar = "=" * 72
    if admin:
        text = (f" No ADMIN_PASSWORD (or WEB_PASSWORD) was set, so Keyloom generated the DASHBOARD password\n"
                f" (shown only this once):\n\n     {password}\n\n"
                f" It is kept in {path} and used again after restarts. It opens the dashboard, key\n"
                f" export and settings; the client PASSWORD does not. Set ADMIN_PASSWORD to choose your own.\n"
                f" 未设置 ADMIN_PASSWORD，已自动生成上面的管理面板密码（只显示这一次），保存在 {path}。\n")
    else:
        text = (f" PASSWORD was not set, so Keyloom generated one (shown only this once):\n\n"
                f"     {password}\n\n"
                f" It is kept in {path} and used again after restarts.\n"
                f" Use it as the API key in your client. Set PASSWORD to choose your own.\n"
                f" 未设置 PASSWORD，已自动生成上面的密码（只显示这一次），保存在 {path}。\n")
    sys.stderr.write(f"{bar}\n{text}{bar}\n")
    sys.stderr.flush()


def _which_password_opens_what(settings: Settings, data_dir: Path, admin_generated_file: bool) -> None:
    """Say (never the values) where each password comes from and what it opens."""
    client = "PASSWORD" if settings.PASSWORD else f"the password kept in {data_dir / PASSWORD_FILE}"
    if settings.ADMIN_PASSWORD:
        admin = "ADMIN_PASSWORD"
    elif settings.WEB_PASSWORD:
        admin = "WEB_PASSWORD (hajimi's name for ADMIN_PASSWORD)"
    else:
        admin = f"the admin password kept in {data_dir / ADMIN_PASSWORD_FILE}"
    log.info("client password (%s) opens the API and /chat; admin password (%s) opens the dashboard, key "
             "export and settings", client, admin)
    if admin_generated_file and settings.PASSWORD and not settings.ADMIN_PASSWORD and not settings.WEB_PASSWORD:
        log.info("coming from hajimi? the dashboard no longer opens with PASSWORD: set ADMIN_PASSWORD (or "
                 "WEB_PASSWORD), or use the generated admin password")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description="Keyloom: an OpenAI-compatible gateway to Gemini keys.")
    p.add_argument("--demo", action="store_true",
                   help="serve offline against a built-in simulated Gemini API with demo keys")
    p.add_argument("--version", action="version", version=f"Keyloom {__version__}")
    # Tests only: run as if the clock were this many seconds ahead (quota-day roll-over across restarts).
    p.add_argument("--clock-offset", type=float, default=0.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def public_base(host: str, port: int, env: Mapping[str, str]) -> str:
    """The address a user opens: the Space's own https address on a HuggingFace Space, else this machine's."""
    space = env.get("SPACE_HOST")
    if space:
        return f"https://{space}"
    shown = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


async def serve(kl: Keyloom, on_ready: Callable[[], None] | None = None) -> None:
    port = await kl.start()
    if on_ready is not None:  # WORKERS>1: tell the parent this worker serves (server/workers.py)
        on_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    counts = kl.pool.counts()
    log.info("Keyloom %s listening on %s:%d with %d key(s)%s; files in %s", __version__, kl.settings.HOST, port,
             counts["total"], " [DEMO MODE]" if kl.demo else "", kl.data_dir)
    base = public_base(kl.settings.HOST, port, os.environ)
    dashboard = kl.settings.DASHBOARD_PATH.rstrip("/") + "/"
    log.info("dashboard: %s%s  ·  chat playground: %s/chat  ·  base URL for clients: %s/v1", base, dashboard, base,
             base)
    await stop.wait()
    grace = kl.settings.SHUTDOWN_GRACE
    log.info("stopping: no new connections; waiting up to %gs for %d request(s) in flight", grace,
             max(0, kl.in_flight))
    clean = False
    try:
        clean = await kl.stop(grace)
        clean = await settle() and clean
    except Exception:
        log.exception("stopping failed")
    if not clean:
        # something named above is still pending: asyncio.run would wait for it again, and a thread it holds
        # would keep the interpreter up. What could be written has been; end here (server/shutdown.py).
        log.warning("stopped, leaving what is named above unfinished")
        exit_now(1)
    log.info("stopped: counters written, database closed")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env, hajimi_notes = hajimi_env(os.environ)
    demo_upstream = None
    try:
        settings = Settings.from_env(env)
        providers = load_providers(settings)
        parse_client_keys(settings.CLIENT_KEYS)  # a key the owner meant to give must not silently not work
        redis_problem = url_problem(settings.REDIS_URL) if settings.REDIS_URL else None
        if redis_problem:
            raise SettingsError([f"REDIS_URL=(hidden): {redis_problem}"])
    except SettingsError as e:
        sys.stderr.write("Keyloom cannot start: invalid settings\n")
        for p in e.problems:
            sys.stderr.write(f"  {p}\n")
        sys.stderr.write("See conf/settings.toml, conf/providers.example.toml or the README.\n")
        return 2
    refusal = requires_redis(settings.WORKERS, settings.REDIS_URL) or unshared_passwords(
        settings.REDIS_URL, settings.PASSWORD, settings.ADMIN_PASSWORD or settings.WEB_PASSWORD)
    if refusal:
        sys.stderr.write(refusal)
        return 2
    workers = settings.WORKERS

    redactor = Redactor(settings.GEMINI_API_KEYS)
    setup_logging(settings.LOG_LEVEL, settings.TZ, redactor)
    log.debug("settings in force: %r", settings)  # secrets show as ***
    for note in hajimi_notes:
        log.warning("%s", note)
    data_dir = resolve_data_dir(settings.DATA_DIR)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        password, generated = load_or_create_password(settings.PASSWORD, data_dir)
        admin_password, admin_generated = load_or_create_password(
            settings.ADMIN_PASSWORD or settings.WEB_PASSWORD, data_dir, ADMIN_PASSWORD_FILE)
    except OSError as e:
        sys.stderr.write(f"Keyloom cannot start: DATA_DIR {data_dir} is not usable ({e.strerror or e}). "
                         "Make it writable, or set DATA_DIR to a writable directory.\n")
        return 2
    redactor.add([password, admin_password])
    if generated:
        _announce_password(password, data_dir / PASSWORD_FILE)
    elif not settings.PASSWORD:
        log.info("using the password stored in %s (generated at first start)", data_dir / PASSWORD_FILE)
    if admin_generated:
        _announce_password(admin_password, data_dir / ADMIN_PASSWORD_FILE, admin=True)
    _which_password_opens_what(settings, data_dir, not (settings.ADMIN_PASSWORD or settings.WEB_PASSWORD))
    if password_matches(password, admin_password):
        log.warning("the admin password is the same as the client PASSWORD: everyone you give the client "
                    "password to can export your keys and change settings. Set a different ADMIN_PASSWORD.")

    async def run(worker: int = 0, on_ready: Callable[[], None] | None = None) -> None:
        nonlocal settings, demo_upstream
        if args.demo:
            from .demo import DEMO_KEYS, start_demo_upstream
            base_url, demo_upstream = await start_demo_upstream()
            settings = settings.replace("demo", GEMINI_BASE_URL=base_url, GEMINI_API_KEYS=list(DEMO_KEYS))
            log.warning("DEMO MODE: answers come from a simulated Gemini API on this machine (%s), "
                        "not from Google. Nothing leaves this machine.", base_url)
        clock = OffsetClock(args.clock_offset) if args.clock_offset else None
        kl = Keyloom(settings, password=password, data_dir=data_dir, demo=args.demo, redactor=redactor, clock=clock,
                     providers=providers, admin_password=admin_password, worker=worker)
        if workers > 1:
            kl.lock = HeldByParent(data_dir)  # the parent holds DATA_DIR for the whole group
        if kl.pool.rejected:
            log.warning("%d value(s) in GEMINI_API_KEYS are not keys (need 8-512 printable characters) "
                        "and were ignored", kl.pool.rejected)
        odd = [mask(k) for k in settings.GEMINI_API_KEYS if valid_key_text(k) and not looks_like_gemini_key(k)]
        if odd and not args.demo:
            log.warning("%d value(s) in GEMINI_API_KEYS do not look like Gemini keys (AIza… or AQ.…): %s. They are "
                        "used anyway; Google will say whether they work (check for a stray character)",
                        len(odd), ", ".join(odd[:10]))
        if not kl.pool.keys:
            log.warning("no Gemini key configured: set GEMINI_API_KEYS (or try --demo)")
        await serve(kl, on_ready)
        if demo_upstream is not None:
            demo_upstream.stop()

    def process(worker: int = 0, on_ready: Callable[[], None] | None = None) -> int:
        # `kill -USR1 <pid>`: every thread's stack to the log (stderr), for a process that seems stuck
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            if settings.UVLOOP:
                try:
                    import uvloop  # the same asyncio loop Tornado runs on, implemented in C
                except ImportError:
                    pass
                else:
                    uvloop.install()
            asyncio.run(run(worker, on_ready))
            stuck = threads_left()
            if stuck:  # the interpreter would wait for them at exit, without limit
                log.warning("stopped, leaving threads that did not end: %s", ", ".join(stuck))
                exit_now(1)
        except (StartupError, DataDirBusy, DatabaseUnusable, SchemaTooNew) as e:
            log.error("Keyloom cannot start: %s", e)
            return 2
        except OSError as e:
            log.error("Keyloom cannot start: %s", e.strerror or e)
            return 2
        return 0

    if workers <= 1:
        return process()
    # WORKERS>1 (server/workers.py): DATA_DIR is taken and the port tried once here, before forking
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
        port = try_port(Keyloom._bind, settings.PORT, settings.HOST)
    except (StartupError, DataDirBusy) as e:
        lock.release()
        log.error("Keyloom cannot start: %s", e)
        return 2
    except OSError as e:
        log.error("Keyloom cannot start: cannot write DATA_DIR %s: %s", data_dir, e.strerror or e)
        return 2
    if port != settings.PORT:  # PORT=0: the port picked here is the one every worker binds
        settings = settings.replace(settings.sources.get("PORT", "default"), PORT=port)

    def worker_process(worker: int, on_ready: Callable[[], None]) -> int:
        tag_log(worker)
        return process(worker, on_ready)

    log.info("starting %d workers on %s:%d (SO_REUSEPORT), sharing the pool through Redis", workers,
             settings.HOST, port)
    try:
        return Supervisor(workers, worker_process, settings.SHUTDOWN_GRACE).run()
    finally:
        lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
