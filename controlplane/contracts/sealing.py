"""Sealed values: tenant secrets encrypted at rest and on their way through Redis, in one format both sides share.

A seal is AES-SIV (RFC 5297, a 512-bit key) over the value, bound to a *context* (what the value is for and whose it
is, e.g. ``upstream:acme:chat``) as associated data, so a sealed value copied to another context does not open.

- ``seal(..., deterministic=True)``, for values that travel through Redis: the same value, context and key always
  seal to the same text, so a snapshot section or a local agent document that did not change is not rewritten (and
  the gateways do not reload it). That reveals only whether two seals of one context hold the same value.
- ``seal(...)`` without it, for rows at rest: a random nonce goes in as associated data, so equal values differ.

Keys are read from a file (or a variable) holding one or more base64url keys, one per line: the first seals, every
one opens, so a key is rotated by putting the new one first and dropping the old once everything was sealed again.
The text is ``fd1.<key id>.<d|r>.<base64url>``: the key id (8 hex digits of the key's SHA-256) picks the key; ``d``
(deterministic) carries the ciphertext, ``r`` the random nonce and then the ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from controlplane.contracts.env import env_str

PREFIX = "fd1"
KEY_BYTES = 64
NONCE_BYTES = 16


class SealError(ValueError):
    """A key is malformed, or a sealed text does not open with the keys given (wrong key, context or bytes)."""


def new_key() -> str:
    """A fresh key in the file format."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def parse_keys(text: str) -> list[bytes]:
    """The keys of a key file's text: non-empty lines that are not ``#`` comments, each a base64url 512-bit key."""
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = _b64decode(line)
        except (binascii.Error, ValueError) as exc:
            raise SealError(f"line {number}: not base64url") from exc
        if len(key) != KEY_BYTES:
            raise SealError(f"line {number}: a key is {KEY_BYTES} bytes, this one is {len(key)}")
        keys.append(key)
    return keys


@dataclass(frozen=True)
class Sealer:
    """Seals with the first key and opens with any of them (see the module docstring)."""

    keys: tuple[bytes, ...]
    _by_id: dict[str, AESSIV] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise SealError("no key")
        object.__setattr__(self, "_by_id", {_key_id(key): AESSIV(key) for key in self.keys})

    @classmethod
    def from_text(cls, text: str) -> Sealer:
        return cls(tuple(parse_keys(text)))

    def seal(self, value: str, context: str, *, deterministic: bool = False) -> str:
        kid = _key_id(self.keys[0])
        nonce = b"" if deterministic else os.urandom(NONCE_BYTES)
        associated = [context.encode(), nonce] if nonce else [context.encode()]
        sealed = self._by_id[kid].encrypt(value.encode(), associated)
        mode = "d" if deterministic else "r"
        return f"{PREFIX}.{kid}.{mode}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def unseal(self, text: str, context: str) -> str:
        parts = text.split(".")
        if len(parts) != 4 or parts[0] != PREFIX or parts[2] not in ("d", "r"):
            raise SealError("not a sealed value")
        aead = self._by_id.get(parts[1])
        if aead is None:
            raise SealError(f"sealed with key {parts[1]}, which is not among the keys given")
        try:
            raw = _b64decode(parts[3])
        except (binascii.Error, ValueError) as exc:
            raise SealError("not a sealed value") from exc
        nonce, body = (raw[:NONCE_BYTES], raw[NONCE_BYTES:]) if parts[2] == "r" else (b"", raw)
        associated = [context.encode(), nonce] if nonce else [context.encode()]
        try:
            return aead.decrypt(body, associated).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError("does not open with these keys and this context") from exc


def sealer_from_env(name: str) -> Sealer | None:
    """The sealer of the keys in ``name`` (or the file ``name_FILE`` names); None when neither is set."""
    text = env_str(name)
    return Sealer.from_text(text) if text.strip() else None


def key_text_problem(text: str) -> str:
    """Why ``text`` is not a usable key list ("" when it is)."""
    try:
        return "" if parse_keys(text) else "holds no key"
    except SealError as exc:
        return str(exc)


def dev_secrets_key(secret_key: str) -> str:
    """A development-only at-rest key derived from Django's ``SECRET_KEY`` (production must set its own)."""
    digest = hashlib.sha512(b"frontdoor secrets at rest\0" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def context(purpose: str, *parts: object) -> str:
    """The associated data a value is sealed under: what it is for, then whose it is (e.g. ``upstream:acme:chat``)."""
    return ":".join([purpose, *(str(part) for part in parts)])


if __name__ == "__main__":  # ``python -m controlplane.contracts.sealing``: print a new key for a key file
    print(new_key())
