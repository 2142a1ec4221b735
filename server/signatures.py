"""Thought signatures: which key issued them, and the ones of the images Gemini drew.

Sealing. Gemini 3 may check a thought signature against the account that issued it, so a pool that rotates
keys per request would break multi-turn tool loops (other pools report exactly that: "thoughtSignature
跨账号验证错误"). Every signature Keyloom hands a client is therefore sealed with the fingerprint of the key
that produced it (`seal`: `<fingerprint>.<signature>`; a fingerprint, never the key, and `.` is not in
base64, so an unsealed signature from elsewhere reads as one without an issuer). The service unseals what
comes back after translation (`unseal_body`), naming the issuer, and the pool sends the turn to that key
when it can; should Gemini still refuse a signature, the attempts after that send Google's placeholder.

Images.

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

import ujson

from .translate.gemini_body import DUMMY_SIGNATURE
from .translate.gemini_facts import candidate_parts, image_of

FINGERPRINT_LENGTH = 12  # hex digits of a key fingerprint (server/pool/keys.py)
MAX_IMAGES = 2000          # signatures kept; the oldest go first
MAX_SIGNATURE = 64 * 1024  # a longer "signature" is not kept (it would let one reply fill the memory)


def seal(signature: str, key_fp: str | None) -> str:
    """A signature as a client gets it: with the fingerprint of the key that issued it, when known."""
    if not key_fp:
        return signature
    return f"{key_fp}.{signature}"


def unseal(text: str) -> tuple[str, str | None]:
    """→ (Gemini's signature, the issuing key's fingerprint or None). Takes sealed and plain signatures."""
    n = FINGERPRINT_LENGTH
    if len(text) > n + 1 and text[n] == "." and all(c in "0123456789abcdef" for c in text[:n]):
        return text[n + 1:], text[:n]
    return text, None


def unseal_body(body: dict[str, Any]) -> str | None:
    """Unseal, in place, every thought signature in a translated Gemini request's contents; → the fingerprint
    of the key that issued the last sealed one (the latest turn's key), or None."""
    issuer = None
    for content in body.get("contents") or ():
        for part in content.get("parts") or () if isinstance(content, dict) else ():
            signature = part.get("thoughtSignature") if isinstance(part, dict) else None
            if isinstance(signature, str):
                part["thoughtSignature"], fp = unseal(signature)
                issuer = fp or issuer
    return issuer


def with_placeholder_signatures(body: bytes) -> bytes:
    """The encoded request with Google's placeholder on every function call in place of its signature, and
    every other signature dropped: what to send once Gemini has refused a signature (another account's, or a
    corrupted one) rather than failing the turn."""
    req = ujson.loads(body)
    for content in req.get("contents") or ():
        for part in content.get("parts") or () if isinstance(content, dict) else ():
            if isinstance(part, dict) and "thoughtSignature" in part:
                if "functionCall" in part:
                    part["thoughtSignature"] = DUMMY_SIGNATURE
                else:
                    del part["thoughtSignature"]
    return ujson.dumps(req, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")


def _digest(data: str) -> bytes:
    return hashlib.blake2b(data.encode("ascii", "replace"), digest_size=16).digest()


class ImageSignatures:
    def __init__(self, max_images: int = MAX_IMAGES):
        self.max_images = max_images
        self._by_image: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def remember(self, reply: Any, key_fp: str | None = None) -> None:
        """Keep the signatures of the images in a Gemini reply (or stream event), sealed with the key that
        answered."""
        if not isinstance(reply, dict):
            return
        for cand in reply.get("candidates") or ():
            for part in candidate_parts(cand):
                signature = part.get("thoughtSignature")
                picture = image_of(part)
                if picture is None or not isinstance(signature, str) or not 0 < len(signature) <= MAX_SIGNATURE:
                    continue
                key = _digest(picture[1])
                self._by_image[key] = seal(signature, key_fp)
                self._by_image.move_to_end(key)
                while len(self._by_image) > self.max_images:
                    self._by_image.popitem(last=False)

    def __call__(self, data: str) -> str | None:
        return self._by_image.get(_digest(data))

    def __len__(self) -> int:
        return len(self._by_image)
