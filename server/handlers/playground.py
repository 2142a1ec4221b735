"""The chat playground at /chat, and its JSON API (/api/conversations…, /api/render).

The page signs in with PASSWORD (it spends keys like any client); a dashboard session works too. The
API takes the same credentials as /v1 (Bearer PASSWORD …) or the page's session cookie with its CSRF
token. Thin handlers: the work is in `conversations.py` and `render.py`.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import ujson

from ..admin.sessions import CHAT_COOKIE
from ..errors import ApiError, bad_request
from ..render import MAX_CALL_CHARS
from .admin import PAGE_HEADERS, json_content
from .base import ApiHandler, BaseHandler

MAX_RENDER_ITEMS = 500
RENDER_BODY = 8 * MAX_CALL_CHARS  # the renderer's budget, as JSON (escapes can take six bytes a character)


class _Page(BaseHandler):
    def set_default_headers(self) -> None:  # same-origin only
        pass

    def session(self) -> Any:
        return self.kl.page_session(self.get_cookie)


class ChatPageHandler(_Page):
    def get(self) -> None:
        page = "chat.html" if self.session() is not None else "chat-login.html"
        for k, v in PAGE_HEADERS.items():
            self.set_header(k, v)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.kl.static_file(page))

    head = get


class ChatLoginHandler(_Page):
    def refusal(self) -> ApiError | None:
        if not json_content(self.request):
            return ApiError(415, "Send the request as application/json.", code="unsupported_media_type")
        return None

    async def post(self) -> None:
        kl = self.kl
        ip = self.client_ip
        try:
            password = ujson.loads(self.body_bytes() or b"{}").get("password")
        except (ValueError, AttributeError):
            raise bad_request("The request body is not a JSON object.") from None
        try:
            kl.admin.check_password(ip, password, kl.password)
        except ApiError as e:
            if e.status == 401:
                kl.audit.refused("login_failed", ip=ip, via="chat")
            raise
        cookie, s = await kl.chat_sessions.create(ip)
        self.set_cookie(CHAT_COOKIE, cookie, path="/", httponly=True, samesite="Strict", secure=self.browser_https(),
                        expires=datetime.fromtimestamp(s.expires_at, UTC))
        self.write_json({"csrf": s.csrf, "expires_at": s.expires_at})


class ChatSessionHandler(_Page):
    def get(self) -> None:
        s = self.session()
        if s is None:
            raise ApiError(401, "Sign in first.", code="unauthorized")
        self.set_header("Cache-Control", "no-store")
        self.write_json({"csrf": s.csrf, "expires_at": s.expires_at})

    async def post(self) -> None:  # sign out
        s = self.kl.chat_sessions.find(self.get_cookie(CHAT_COOKIE))
        if s is not None:
            await self.kl.chat_sessions.end(s)
        self.clear_cookie(CHAT_COOKIE, path="/")
        self.write_json({"signed_out": True})


class _Api(ApiHandler):
    takes_client_keys = False  # the playground is the owner's: PASSWORD or its page session

    def set_default_headers(self) -> None:  # same-origin only: no CORS for saved conversations
        pass

    def prepare(self) -> None:
        super().prepare()
        self.set_header("Cache-Control", "no-store")

    def body(self) -> Any:
        try:
            return ujson.loads(self.body_bytes() or b"")
        except (ValueError, OverflowError):
            raise bad_request("The request body is not valid JSON.") from None


class ConversationsHandler(_Api):
    async def get(self) -> None:
        self.write_json({"conversations": await self.kl.conversations.list(self.get_query_argument("q", ""))})

    async def post(self) -> None:
        self.write_json(await self.kl.conversations.create(self.body()), 201)


class ConversationImportHandler(_Api):
    async def post(self) -> None:
        self.write_json(await self.kl.conversations.import_json(self.body()), 201)


class ConversationHandler(_Api):
    async def get(self, cid: str) -> None:
        self.write_json(await self.kl.conversations.get(cid))

    async def put(self, cid: str) -> None:
        self.write_json(await self.kl.conversations.update(cid, self.body()))

    async def delete(self, cid: str) -> None:
        await self.kl.conversations.delete(cid)
        self.write_json({"deleted": cid})


class ConversationExportHandler(_Api):
    async def get(self, cid: str) -> None:
        fmt = self.get_query_argument("format", "json")
        store = self.kl.conversations
        if fmt == "md":
            text = await store.export_markdown(cid)
            self.set_header("Content-Type", "text/markdown; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="conversation-{cid}.md"')
            self.finish(text.encode("utf-8"))
        elif fmt == "json":
            data = await store.export_json(cid)
            self.set_header("Content-Disposition", f'attachment; filename="conversation-{cid}.json"')
            self.write_json(data)
        else:
            raise bad_request("format must be md or json", "format")


class RenderHandler(_Api):
    """Markdown → sanitized HTML: `{"markdown": "…"}` or `{"markdown": ["…", …]}`."""

    def max_body(self) -> int:
        return RENDER_BODY

    async def post(self) -> None:
        body = self.body()
        md = body.get("markdown") if isinstance(body, dict) else None
        if isinstance(md, str):
            self.write_json({"html": (await self.kl.renderer.render_many([md]))[0]})
        elif isinstance(md, list) and len(md) <= MAX_RENDER_ITEMS and all(isinstance(x, str) for x in md):
            self.write_json({"html": await self.kl.renderer.render_many(md)})
        else:
            raise bad_request(f"markdown must be text or a list of at most {MAX_RENDER_ITEMS} texts", "markdown")


PLAYGROUND_ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/chat/?", ChatPageHandler),
    (r"/chat/login", ChatLoginHandler),
    (r"/chat/session", ChatSessionHandler),
    (r"/api/conversations/?", ConversationsHandler),
    (r"/api/conversations/import", ConversationImportHandler),
    (r"/api/conversations/([0-9a-f]{16})", ConversationHandler),
    (r"/api/conversations/([0-9a-f]{16})/export", ConversationExportHandler),
    (r"/api/render", RenderHandler),
]
