"""API key authentication against the in-memory key index.

Keys are ``fd_<env>_<key_id>_<secret>``; the index holds HMAC-SHA256(pepper, secret) and the environment the key
was issued with, which the presented key must repeat (``fd_test_...`` never opens a live key). Verifying an HMAC per
request is cheap but not free, so positive verifications are cached by the SHA-256 of the full presented key
(never the key itself) in a bounded dict that is dropped on every snapshot reload: a revoked key cannot
survive a reload in the cache, and revocation / expiry / suspension are re-checked on every request anyway.
Those checks are ``principal_for``, which a batch line sent on behalf of a key (``gateway.inference``) passes too.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from controlplane.contracts.keyformat import parse_key, secret_matches
from gateway.errors import GatewayError, invalid_api_key, permission_denied
from gateway.snapshot_index import KeyEntry, Snapshot, TenantEntry

INFERENCE_SCOPE = "inference"
READ_SCOPE = "read"


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyEntry
    tenant: TenantEntry


class Authenticator:
    def __init__(self, pepper: str, cache_size: int = 10000) -> None:
        self.pepper = pepper
        self.cache_size = cache_size
        self._verified: dict[bytes, str] = {}  # sha256(full key) -> key_id, for the current snapshot only

    def clear(self, _snapshot: Snapshot | None = None) -> None:
        self._verified = {}

    def authenticate(self, authorization: bytes | None, snapshot: Snapshot, scopes: tuple[str, ...]) -> Principal:
        """Return the caller, or raise the 401/403 the client must see.

        ``scopes``: the caller needs at least one of them.
        """
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise invalid_api_key("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        presented = authorization[7:].strip()
        digest = hashlib.sha256(presented).digest()
        key_id = self._verified.get(digest)
        if key_id is None:
            key_id = self._verify(presented, snapshot)
            if len(self._verified) >= self.cache_size:
                self._verified = {}  # crude but bounded; refills at the cost of one HMAC per key
            self._verified[digest] = key_id
        return principal_for(key_id, snapshot, scopes)

    def _verify(self, presented: bytes, snapshot: Snapshot) -> str:
        try:
            raw = presented.decode("ascii")
        except UnicodeDecodeError:
            raise _bad_key() from None
        parsed = parse_key(raw)
        if parsed is None:
            raise _bad_key()
        entry = snapshot.keys.get(parsed.key_id)
        # One answer whichever part is wrong (id, secret or environment): the client learns nothing of the others.
        if entry is None or not secret_matches(parsed.secret, entry.hash, self.pepper) or parsed.env != entry.env:
            raise _bad_key()
        return parsed.key_id


def principal_for(key_id: str, snapshot: Snapshot, scopes: tuple[str, ...]) -> Principal:
    """The key ``key_id`` of ``snapshot`` as a caller, or the 401/403 the client must see.

    Every way in ends here: a presented key once its secret verified, and a batch line sent on behalf of the key
    that created the batch. Revocation, expiry, suspension and scope are checked on every request, never cached.
    ``scopes``: the caller needs at least one of them.
    """
    entry = snapshot.keys.get(key_id)
    if entry is None:  # a verified key is in its snapshot; a batch's key may have been deleted since
        raise _bad_key()
    if entry.revoked:
        raise invalid_api_key("This API key has been revoked.")
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise invalid_api_key("This API key has expired.")
    tenant = snapshot.tenants.get(entry.tenant)
    if tenant is None:
        raise _bad_key()
    if not tenant.active:
        raise permission_denied("Your organization is suspended.", "tenant_suspended")
    if not any(scope in entry.scopes for scope in scopes):
        raise permission_denied(f"This API key lacks the required scope ({' or '.join(scopes)}).", "insufficient_scope")
    return Principal(entry, tenant)


def _bad_key() -> GatewayError:
    return invalid_api_key("Incorrect API key provided.")
