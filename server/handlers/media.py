"""POST /v1/images/generations, /v1/images/edits and /v1/audio/speech: parse, hand to the media service, write.
Image edits come as OpenAI sends them, multipart/form-data (`image` or `image[]` files, `prompt`, `n`, `size`,
…), or as JSON with the images as data URLs (`images: [{"image_url": "data:…"}]`)."""
from __future__ import annotations

import base64
from typing import Any

from tornado.httputil import HTTPFile, parse_body_arguments

from ..errors import bad_request
from ..translate.gemini_body import TranslationError
from ..translate.openai_to_gemini import parse_data_url
from .base import LoggedHandler

MAX_EDIT_IMAGES = 16
_FIELDS = ("prompt", "model", "n", "size", "quality", "response_format", "background", "output_format", "user")
_NUMBERS = ("n",)


class ImagesHandler(LoggedHandler):
    async def post(self) -> None:
        req = self.json_body()
        ctx = self.begin()
        self.write_json(await ctx.run(self.kl.media.images(req, self.client_ip, ctx.trace)))


class ImageEditsHandler(LoggedHandler):
    async def post(self) -> None:
        kind = self.request.headers.get("Content-Type", "")
        if kind.startswith("multipart/form-data"):
            req, images = self._form(kind)
        else:
            req = self.json_body()
            images = self._json_images(req)
        if not images:
            raise bad_request("image is required: the picture(s) to edit", "image")
        if "mask" in (req if isinstance(req, dict) else {}):
            raise bad_request("mask is not supported: Gemini edits by the prompt (say what to change where)", "mask")
        ctx = self.begin()
        self.write_json(await ctx.run(self.kl.media.images(req, self.client_ip, ctx.trace, images)))

    def _form(self, content_type: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[HTTPFile]] = {}
        parse_body_arguments(content_type, self.body_bytes(), args, files)
        req: dict[str, Any] = {}
        for name in _FIELDS:
            if name in args:
                text = args[name][-1].decode("utf-8", "replace")
                if name in _NUMBERS:
                    try:
                        req[name] = int(text)
                    except ValueError:
                        raise bad_request(f"{name} must be a whole number", name) from None
                else:
                    req[name] = text
        if "mask" in files or "mask" in args:
            req["mask"] = True
        images = []
        for f in files.get("image", []) + files.get("image[]", []):
            mime = f.content_type if f.content_type.startswith("image/") else "image/png"
            images.append((mime, base64.b64encode(f.body).decode()))
        if len(images) > MAX_EDIT_IMAGES:
            raise bad_request(f"at most {MAX_EDIT_IMAGES} images can be edited together", "image")
        return req, images

    @staticmethod
    def _json_images(req: Any) -> list[tuple[str, str]]:
        if not isinstance(req, dict):
            raise bad_request("the request body must be a JSON object")
        items = req.get("images")
        if items is None:
            return []
        if not isinstance(items, list) or len(items) > MAX_EDIT_IMAGES:
            raise bad_request(f"images must be a list of at most {MAX_EDIT_IMAGES} images", "images")
        out = []
        for i, item in enumerate(items):
            url = item.get("image_url") if isinstance(item, dict) else None
            if not isinstance(url, str) or not url.startswith("data:"):
                raise bad_request("each image must be {\"image_url\": \"data:image/…;base64,…\"} (Keyloom fetches "
                                  "no file ids)", f"images[{i}].image_url")
            try:
                out.append(parse_data_url(url, f"images[{i}].image_url"))
            except TranslationError as e:
                raise bad_request(e.message, e.param) from None
        return out


class SpeechHandler(LoggedHandler):
    async def post(self) -> None:
        req = self.json_body()
        ctx = self.begin()
        audio, content_type = await ctx.run(self.kl.media.speech(req, self.client_ip, ctx.trace))
        self.set_header("Content-Type", content_type)
        self.finish(audio)

