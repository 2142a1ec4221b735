"""Thought signatures of the images Gemini drew, so that an image sent back in a conversation goes upstream
with its signature.

Gemini 3 image models sign the image parts they return, and want the signature back when the image comes
back as history (a multi-turn edit). OpenAI-style clients keep the image (in `message.images`, or as a
Markdown image in the text) but have nowhere to keep a signature, so Keyloom keeps it: the one piece of
translation state, held here, bounded, keyed by a digest of the image's base64 data (never the image
itself), forgotten on restart (Gemini then gets the image without a signature, as it would from any client).
"""
from __future__ import annotations

import collections
import hashlib
from typing import Any

from .translate.gemini_facts import candidate_parts, image_of

MAX_IMAGES = 2000          # signatures kept; the oldest go first
MAX_SIGNATURE = 64 * 1024  # a longer "signature" is not kept (it would let one reply fill the memory)


def _digest(data: str) -> bytes:
    return hashlib.blake2b(data.encode("ascii", "replace"), digest_size=16).digest()


class ImageSignatures:
    def __init__(self, max_images: int = MAX_IMAGES):
        self.max_images = max_images
        self._by_image: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def remember(self, reply: Any) -> None:
        """Keep the signatures of the images in a Gemini reply (or stream event)."""
        if not isinstance(reply, dict):
            return
        for cand in reply.get("candidates") or ():
            for part in candidate_parts(cand):
                signature = part.get("thoughtSignature")
                picture = image_of(part)
                if picture is None or not isinstance(signature, str) or not 0 < len(signature) <= MAX_SIGNATURE:
                    continue
                key = _digest(picture[1])
                self._by_image[key] = signature
                self._by_image.move_to_end(key)
                while len(self._by_image) > self.max_images:
                    self._by_image.popitem(last=False)

    def __call__(self, data: str) -> str | None:
        return self._by_image.get(_digest(data))

    def __len__(self) -> int:
        return len(self._by_image)
