"""The dashboard page and its admin API. Thin: authenticate, parse, call `kl.admin`, write.

Every API route needs a session cookie (plus the session's CSRF token in `X-CSRF-Token` on
anything that changes state) or `Authorization: Bearer <ADMIN_PASSWORD>`. State-changing calls
must also be `application/json`, which a cross-site form cannot send without a CORS preflight
we never answer. Nothing is answered to a caller without credentials but 401.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ujson

from ..admin.service import Actor
from ..admin.sessions import COOKIE, Session
from ..errors import ApiError
from .base import SMALL_BODY, BaseHandler

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"app.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
          "login.js": "text/javascript; charset=utf-8", "i18n.js": "text/javascript; charset=utf-8",
          "icon.svg": "image/svg+xml", "chat.js": "text/javascript; charset=utf-8",
          "chat.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8",
          "clientkeys.js": "text/javascript; charset=utf-8"}  # the Client keys section of the dashboard
MAX_ADMIN_BODY = 1024 * 1024  # 10 000 keys pasted at once fit; nothing the admin API takes needs more
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'self' https://huggingface.co https://*.hf.space",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def json_content(request: Any) -> bool:
    """Sent as application/json: what an HTML form on another site cannot send without a CORS preflight."""
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"


def sign_in_required() -> ApiError:
    return ApiError(401, "Sign in to the dashboard first (or send Authorization: Bearer <ADMIN_PASSWORD>).",
                    code="unauthorized")


class _NoCors:
    def set_default_headers(self) -> None:  # the admin side is same-origin only
        pass


class AdminPageHandler(_NoCors, BaseHandler):
    """GET <DASHBOARD_PATH>: the dashboard when signed in, else only the login form."""

    def get(self) -> None:
        kl = self.kl
        signed_in = kl.admin.sessions.find(self.get_cookie(COOKIE)) is not None
        page = "dashboard.html" if signed_in else "login.html"
        for k, v in PAGE_HEADERS.items():
            self.set_header(k, v)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(kl.static_file(page))

    head = get


class AdminRedirectHandler(_NoCors, BaseHandler):
    """<DASHBOARD_PATH> without its slash: relative links on the page need it."""

    def get(self) -> None:
        self.redirect(self.request.path + "/", permanent=False)


class AssetHandler(_NoCors, BaseHandler):
    def get(self, name: str) -> None:
        kind = ASSETS.get(name)
        if kind is None:
            raise ApiError(404, "No such file.", code="not_found")
        self.set_header("Content-Type", kind)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.kl.static_file(name))


class AdminApiHandler(_NoCors, BaseHandler):
    actor: Actor
    session: Session | None = None
    public = False  # login needs no session

    def prepare(self) -> None:
        self.set_header("Cache-Control", "no-store")
        super().prepare()  # refusal(), then the body within max_body()

    def max_body(self) -> int:
        return SMALL_BODY if self.public else MAX_ADMIN_BODY

    def refusal(self) -> ApiError | None:
        if self.request.method in ("POST", "PUT") and not json_content(self.request):
            return ApiError(415, "Send the request as application/json (curl: -H 'Content-Type: "
                                 "application/json').", code="unsupported_media_type")
        kl = self.kl
        ip = self.client_ip
        if self.public:
            self.actor = Actor(ip, "session")
            return None
        auth = self.request.headers.get("Authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer":
                return sign_in_required()
            try:
                kl.admin.check_password(ip, token.strip())  # 429 when throttled, 401 when wrong (counted)
            except ApiError as e:
                return e
            self.actor = Actor(ip, "bearer")
            return None
        self.session = kl.admin.sessions.find(self.get_cookie(COOKIE))
        if self.session is None:
            return sign_in_required()
        if self.request.method not in ("GET", "HEAD"):
            if not self.session.csrf_ok(self.request.headers.get("X-CSRF-Token")):
                return ApiError(403, "Missing or wrong X-CSRF-Token: reload the dashboard.", code="csrf_failed")
        self.actor = Actor(ip, "session")
        return None

    def body(self) -> dict[str, Any]:
        raw = self.body_bytes()
        if not raw.strip():
            return {}
        try:
            data = ujson.loads(raw)
        except (ValueError, OverflowError):
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return data

    async def options(self, *args: Any) -> None:
        raise ApiError(405, "The admin API does not answer cross-origin requests.")


class LoginHandler(AdminApiHandler):
    public = True

    async def post(self) -> None:
        kl = self.kl
        cookie, info = await kl.admin.login(self.actor.ip, self.body().get("password"))
        self.set_cookie(COOKIE, cookie, path=kl.dashboard_base + "/", httponly=True, samesite="Strict",
                        secure=self.browser_https(),
                        expires=datetime.fromtimestamp(info["expires_at"], UTC))
        self.write_json(info)


class LogoutHandler(AdminApiHandler):
    async def post(self) -> None:
        if self.session is not None:
            await self.kl.admin.sessions.end(self.session)
            await self.kl.admin.audit.record("logout", ip=self.actor.ip, via="session")
        self.clear_cookie(COOKIE, path=self.kl.dashboard_base + "/")
        self.write_json({"signed_out": True})


class SessionHandler(AdminApiHandler):
    def get(self) -> None:
        s = self.session
        self.write_json({"via": self.actor.via, "csrf": s.csrf if s else None,
                         "expires_at": s.expires_at if s else None})


class StatusHandler(AdminApiHandler):
    async def get(self) -> None:
        self.write_json(await self.kl.admin.status())


class ChartsHandler(AdminApiHandler):
    async def get(self) -> None:
        self.write_json(await self.kl.admin.charts())


class RequestsHandler(AdminApiHandler):
    async def get(self) -> None:
        self.write_json(await self.kl.admin.requests(self.get_query_argument("status", None)))


class AuditHandler(AdminApiHandler):
    async def get(self) -> None:
        await self.kl.admin._fresh()  # refused sign-ins are counted in memory until the next flush
        self.write_json({"audit": await self.kl.admin.audit.recent()})


class SettingsHandler(AdminApiHandler):
    def get(self) -> None:
        self.write_json(self.kl.admin.settings())

    async def put(self) -> None:
        self.write_json(await self.kl.admin.change_settings(self.actor, self.body()))


class SettingHandler(AdminApiHandler):
    async def delete(self, name: str) -> None:
        """Back to the environment (or default) value."""
        self.write_json(await self.kl.admin.reset_settings(self.actor, [name]))


class KeysHandler(AdminApiHandler):
    async def post(self) -> None:
        self.write_json(await self.kl.admin.add_keys(self.actor, self.body().get("keys")))


class KeyHandler(AdminApiHandler):
    async def delete(self, fp: str) -> None:
        self.write_json(await self.kl.admin.remove_key(self.actor, fp))


class KeyActionHandler(AdminApiHandler):
    async def post(self, fp: str, action: str) -> None:
        admin = self.kl.admin
        if action == "enable":
            self.write_json(await admin.enable_key(self.actor, fp))
        else:
            self.write_json(await admin.reset_key(self.actor, fp))


class KeyTestHandler(AdminApiHandler):
    async def post(self) -> None:
        self.write_json(self.kl.admin.test_keys(self.actor, self.body().get("keys")))


class JobHandler(AdminApiHandler):
    def get(self, job_id: str) -> None:
        self.write_json(self.kl.admin.test_job(job_id))


class ExportHandler(AdminApiHandler):
    async def post(self) -> None:
        self.write_json(await self.kl.admin.export_keys(self.actor, self.body().get("password")))


def admin_routes(base: str) -> list[tuple[str, type[BaseHandler]]]:
    """Routes of the dashboard mounted at `base` ('' for the site root)."""
    api = base + "/api"
    routes: list[tuple[str, type[BaseHandler]]] = [
        (base + "/", AdminPageHandler),
        (base + r"/assets/([a-z0-9]+\.[a-z]+)", AssetHandler),
        (api + "/login", LoginHandler),
        (api + "/logout", LogoutHandler),
        (api + "/session", SessionHandler),
        (api + "/status", StatusHandler),
        (api + "/charts", ChartsHandler),
        (api + "/requests", RequestsHandler),
        (api + "/audit", AuditHandler),
        (api + "/settings", SettingsHandler),
        (api + "/settings/([A-Z0-9_]+)", SettingHandler),
        (api + "/keys", KeysHandler),
        (api + "/keys/test", KeyTestHandler),
        (api + "/keys/export", ExportHandler),
        (api + "/keys/([0-9a-f]{12})", KeyHandler),
        (api + "/keys/([0-9a-f]{12})/(enable|reset)", KeyActionHandler),
        (api + "/jobs/([a-z0-9]+)", JobHandler),
    ]
    from .admin_keys import key_management_routes  # here: admin_keys subclasses this module's handlers
    routes += key_management_routes(api)  # notes, tags, disabling by hand, invalid keys, history
    from .client_keys import client_key_routes  # imports this module: after it is defined
    routes += client_key_routes(api)
    if base:
        routes.append((base, AdminRedirectHandler))
    return routes
