"""The single sign-on settings, read from ``FRONTDOOR_OIDC_*`` (docs/configuration.md) into one ``OidcSettings``.

Django-free, so ``controlplane/settings.py`` can import it before the apps load. Each bad value is an
``ImproperlyConfiguredEnv`` naming its variable; settings.py turns it into ``ImproperlyConfigured``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from controlplane.contracts.env import ImproperlyConfiguredEnv, env_bool, env_float, env_json, env_list, env_str

# Tenant roles, weakest first (tenants.models.Role; a test keeps the two equal).
ROLES = ("viewer", "member", "admin", "owner")
# The ID token algorithms the backend verifies: RS*/ES* against the provider's JWKS, HS256 with the client secret.
SIGN_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# A tenant slug as the Tenant model allows it (a DNS-1123 label of at most 40 characters).
_SLUG = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
MAX_GROUP_NAME = 256


@dataclass(frozen=True)
class TenantGrant:
    """What one provider group gives in one tenant."""

    tenant: str
    role: str


@dataclass(frozen=True)
class OidcSettings:
    """One OpenID Connect provider the console signs people in with."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid email profile"
    provider_name: str = "single sign-on"
    token_auth_method: str = "client_secret_basic"  # noqa: S105 - a method's name, no secret
    sign_algorithm: str = "RS256"
    groups_claim: str = "groups"
    staff_groups: frozenset[str] = frozenset()
    tenant_roles: dict[str, TenantGrant] = field(default_factory=dict)
    create_users: bool = True
    timeout_s: float = 10.0

    @property
    def maps_groups(self) -> bool:
        """Whether the group claim decides anything (platform staff or a tenant role)."""
        return bool(self.staff_groups or self.tenant_roles)


def parse_tenant_roles(name: str, value: object) -> dict[str, TenantGrant]:
    """``{"group": ["tenant-slug", "role"], ...}`` as ``{group: TenantGrant}``; ImproperlyConfiguredEnv otherwise."""
    example = '{"acme-admins": ["acme", "admin"]}'
    if not isinstance(value, dict):
        raise ImproperlyConfiguredEnv(f"{name} must be a JSON object mapping a group to [tenant, role], e.g. {example}")
    grants: dict[str, TenantGrant] = {}
    for group, target in value.items():
        if not group or len(group) > MAX_GROUP_NAME:
            raise ImproperlyConfiguredEnv(f"{name}: a group name has 1 to {MAX_GROUP_NAME} characters")
        if not (isinstance(target, list) and len(target) == 2 and all(isinstance(item, str) for item in target)):
            raise ImproperlyConfiguredEnv(f"{name}: group {group!r} must map to [tenant, role], e.g. {example}")
        tenant, role = target
        if not _SLUG.match(tenant):
            raise ImproperlyConfiguredEnv(f"{name}: group {group!r} names {tenant!r}, which is no tenant slug")
        if role not in ROLES:
            raise ImproperlyConfiguredEnv(f"{name}: group {group!r} gives {role!r}; use one of {', '.join(ROLES)}")
        grants[group] = TenantGrant(tenant=tenant, role=role)
    return grants


def _issuer(value: str, *, production: bool) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in {"https", "http"} or not parsed.hostname or parsed.query or parsed.fragment:
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_OIDC_ISSUER={value!r} is not an issuer URL (https://host[/path])")
    # Codes and tokens cross this connection: in production only over TLS.
    if production and parsed.scheme != "https":
        raise ImproperlyConfiguredEnv("FRONTDOOR_OIDC_ISSUER must be an https:// URL in production")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


def read_oidc_settings(*, production: bool) -> OidcSettings | None:
    """The provider configured by ``FRONTDOOR_OIDC_*``, or None (single sign-on off) without an issuer."""
    issuer = env_str("FRONTDOOR_OIDC_ISSUER", "")
    if not issuer:
        return None
    client_id = env_str("FRONTDOOR_OIDC_CLIENT_ID", "")
    client_secret = env_str("FRONTDOOR_OIDC_CLIENT_SECRET", "")
    if not client_id or not client_secret:
        raise ImproperlyConfiguredEnv(
            "FRONTDOOR_OIDC_ISSUER needs FRONTDOOR_OIDC_CLIENT_ID and FRONTDOOR_OIDC_CLIENT_SECRET (or _FILE)"
        )
    scopes = env_str("FRONTDOOR_OIDC_SCOPES", OidcSettings.scopes)
    # Accounts are matched by verified e-mail: without the email scope no one could be matched.
    if not {"openid", "email"} <= set(scopes.split()):
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_OIDC_SCOPES={scopes!r} must include 'openid' and 'email'")
    groups_claim = env_str("FRONTDOOR_OIDC_GROUPS_CLAIM", OidcSettings.groups_claim)
    if any(not part for part in groups_claim.split(".")):
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_OIDC_GROUPS_CLAIM={groups_claim!r} is no claim name (e.g. groups)")
    timeout_s = env_float("FRONTDOOR_OIDC_TIMEOUT_S", OidcSettings.timeout_s)
    if not 0 < timeout_s <= 60:
        raise ImproperlyConfiguredEnv("FRONTDOOR_OIDC_TIMEOUT_S must be more than 0 and at most 60 seconds")
    return OidcSettings(
        issuer=_issuer(issuer, production=production),
        client_id=client_id,
        client_secret=client_secret,
        scopes=" ".join(scopes.split()),
        provider_name=env_str("FRONTDOOR_OIDC_PROVIDER_NAME", OidcSettings.provider_name)[:60],
        token_auth_method=_choice("FRONTDOOR_OIDC_TOKEN_AUTH", OidcSettings.token_auth_method, TOKEN_AUTH_METHODS),
        sign_algorithm=_choice("FRONTDOOR_OIDC_SIGN_ALGORITHM", OidcSettings.sign_algorithm, SIGN_ALGORITHMS),
        groups_claim=groups_claim,
        staff_groups=frozenset(env_list("FRONTDOOR_OIDC_STAFF_GROUPS")),
        tenant_roles=parse_tenant_roles("FRONTDOOR_OIDC_TENANT_ROLES", env_json("FRONTDOOR_OIDC_TENANT_ROLES", {})),
        create_users=env_bool("FRONTDOOR_OIDC_CREATE_USERS", OidcSettings.create_users),
        timeout_s=timeout_s,
    )


def read_password_sign_in(oidc: OidcSettings | None) -> bool:
    """``FRONTDOOR_PASSWORD_SIGN_IN`` (default on); turning it off needs single sign-on, or no one could sign in."""
    enabled = env_bool("FRONTDOOR_PASSWORD_SIGN_IN", True)
    if not enabled and oidc is None:
        raise ImproperlyConfiguredEnv("FRONTDOOR_PASSWORD_SIGN_IN=false needs FRONTDOOR_OIDC_ISSUER (single sign-on)")
    return enabled
