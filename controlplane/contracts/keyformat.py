"""The API key format and its hashing, shared by the control plane (issuing) and the gateway (verifying).

A key reads ``fd_<env>_<key_id>_<secret>``: ``env`` is ``live`` or ``test``, ``key_id`` is 8 lowercase
alphanumerics (public, indexed), ``secret`` is 40 alphanumerics. Only ``key_id`` and
HMAC-SHA256(pepper, secret) are ever stored. Django-free so the gateway can import it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import NamedTuple

KEY_PREFIX = "fd"
KEY_ID_LENGTH = 8
SECRET_LENGTH = 40
_KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


class ParsedKey(NamedTuple):
    env: str
    key_id: str
    secret: str


def generate_key(env: str = "live") -> tuple[str, ParsedKey]:
    """Return a new full key string and its parts."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return f"{KEY_PREFIX}_{env}_{key_id}_{secret}", ParsedKey(env, key_id, secret)


def parse_key(raw: str) -> ParsedKey | None:
    """Split a presented key into its parts, or None when it is not in our format."""
    parts = raw.split("_")
    if len(parts) != 4 or parts[0] != KEY_PREFIX:
        return None
    _, env, key_id, secret = parts
    if len(key_id) != KEY_ID_LENGTH or len(secret) != SECRET_LENGTH or not env:
        return None
    return ParsedKey(env, key_id, secret)


def hash_secret(secret: str, pepper: str) -> str:
    """Hex HMAC-SHA256 of the secret keyed by the server-side pepper."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str, pepper: str) -> bool:
    """Constant-time comparison of a presented secret against a stored hash."""
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)
