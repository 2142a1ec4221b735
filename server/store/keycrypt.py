"""Encryption of the keys added on the dashboard before they are stored in Redis (KEY_ENCRYPTION_SECRET).

Why: a Redis is often a hosted service, shared, backed up elsewhere, or reachable by more people than the
replicas' own disks; what it holds must not hand out the pool's keys. Each key is sealed with AES-256-GCM
(authenticated: a value altered in Redis, or a wrong secret, fails to open instead of giving garbage), a fresh
random nonce per value, and the key's fingerprint as associated data (a sealed value moved to another
fingerprint's entry does not open). The AES key is derived from the operator's secret with scrypt and a random
salt stored beside the values (`p meta` field `key_salt`): a passphrase-like secret is costly to guess from a
dump. A known value sealed with the same key (`key_check`) tells a wrong secret at start without any key.
"""
from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SALT_BYTES = 16
NONCE_BYTES = 12
SCRYPT_N = 2 ** 15  # ~32 MiB and ~0.1 s once per process start: cheap here, costly for whoever guesses
CHECK_TEXT = "keyloom key encryption check"
CHECK_AAD = "check"


class CannotOpen(ValueError):
    """The value was sealed with another secret, or altered."""


class KeyCipher:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    @classmethod
    def derive(cls, secret: str, salt: bytes) -> KeyCipher:
        """Slow on purpose (scrypt): call once, off the event loop."""
        return cls(Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(secret.encode("utf-8")))

    def seal(self, text: str, aad: str) -> str:
        """→ "v1.<nonce>.<ciphertext>" (base64url)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8"), aad.encode("utf-8"))
        return "v1." + _b64(nonce) + "." + _b64(sealed)

    def open(self, value: str, aad: str) -> str:
        try:
            version, nonce, sealed = value.split(".")
            if version != "v1":
                raise ValueError(version)
            return self._aead.decrypt(_unb64(nonce), _unb64(sealed), aad.encode("utf-8")).decode("utf-8")
        except (InvalidTag, ValueError, TypeError) as e:
            raise CannotOpen("cannot be opened with this KEY_ENCRYPTION_SECRET") from e


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
