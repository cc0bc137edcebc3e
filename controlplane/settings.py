"""Django settings, read from the environment in this one module (see docs/configuration.md).

``FRONTDOOR_ENV`` picks the profile: ``development`` (default; safe local defaults) or ``production``
(secrets required, DEBUG refused, HTTPS hardening on).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from controlplane.contracts.addresses import AddressRefused, parse_networks, split_url
from controlplane.contracts.batch_wire import internal_token_from_env
from controlplane.contracts.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_float,
    env_gpu_counts,
    env_int,
    env_list,
    env_str,
)
from controlplane.contracts.sealing import dev_secrets_key, key_text_problem
from tenants.sso.config import read_oidc_settings, read_password_sign_in

BASE_DIR = Path(__file__).resolve().parent.parent


def _host_port(name: str, text: str) -> str:
    """``text`` when it is ``host:port`` (``[::1]:8000`` for IPv6); ImproperlyConfigured naming ``name`` otherwise."""
    try:
        _, _, _, path = split_url(f"http://{text}")
    except AddressRefused as exc:
        raise ImproperlyConfigured(f"{name}: {text!r} is not host:port ({exc})") from exc
    if path != "/" or not text.rsplit(":", 1)[-1].isdigit():
        raise ImproperlyConfigured(f"{name}: {text!r} is not host:port (e.g. 10.0.0.7:9090 or [::1]:8000)")
    return text


def _networks(name: str, values: list[str]) -> list[str]:
    """``values`` as normalised CIDRs; ImproperlyConfigured naming ``name`` and the bad one otherwise."""
    try:
        return [str(network) for network in parse_networks(values)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


try:
    FRONTDOOR_ENV = env_str("FRONTDOOR_ENV", "development")
    if FRONTDOOR_ENV not in {"development", "production"}:
        raise ImproperlyConfigured(f"FRONTDOOR_ENV={FRONTDOOR_ENV!r}: use 'development' or 'production'")
    PRODUCTION = FRONTDOOR_ENV == "production"

    DEBUG = env_bool("DEBUG", default=not PRODUCTION)
    if PRODUCTION and DEBUG:
        raise ImproperlyConfigured("DEBUG=true is refused when FRONTDOOR_ENV=production")

    _DEV_SECRET = "dev-insecure-secret-key-change-me-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105
    _DEV_PEPPER = "dev-insecure-api-key-pepper"
    SECRET_KEY = env_str("SECRET_KEY", "" if PRODUCTION else _DEV_SECRET)
    FRONTDOOR_KEY_PEPPER = env_str("FRONTDOOR_KEY_PEPPER", "" if PRODUCTION else _DEV_PEPPER)
    if PRODUCTION and (len(SECRET_KEY) < 50 or SECRET_KEY == _DEV_SECRET):
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) of 50+ characters is required in production")
    if PRODUCTION and (len(FRONTDOOR_KEY_PEPPER) < 32 or FRONTDOOR_KEY_PEPPER == _DEV_PEPPER):
        raise ImproperlyConfigured("FRONTDOOR_KEY_PEPPER (or _FILE) of 32+ characters is required in production")

    # Tenant secrets (deployments/secrets.py). At rest they are sealed with FRONTDOOR_SECRETS_KEY, which only the
    # control plane reads (in development a key derived from SECRET_KEY); on their way through Redis, to the gateway
    # (an external deployment's upstream key) and the local agent (a replica's secret variables), with
    # FRONTDOOR_SEAL_KEY, which those read too. Without a seal key nothing that would travel that way is accepted.
    FRONTDOOR_SECRETS_KEY = env_str("FRONTDOOR_SECRETS_KEY", "" if PRODUCTION else dev_secrets_key(SECRET_KEY))
    if not FRONTDOOR_SECRETS_KEY:
        raise ImproperlyConfigured(
            "FRONTDOOR_SECRETS_KEY (or _FILE) is required in production (`python -m controlplane.contracts.sealing`)"
        )
    FRONTDOOR_SEAL_KEY = env_str("FRONTDOOR_SEAL_KEY", "")
    for _name, _keys in (("FRONTDOOR_SECRETS_KEY", FRONTDOOR_SECRETS_KEY), ("FRONTDOOR_SEAL_KEY", FRONTDOOR_SEAL_KEY)):
        if _keys and (_problem := key_text_problem(_keys)):
            raise ImproperlyConfigured(f"{_name} (or _FILE): {_problem}")
    FRONTDOOR_SECRET_MAX_BYTES = env_int("FRONTDOOR_SECRET_MAX_BYTES", 8192)
    FRONTDOOR_SECRETS_PER_TENANT = env_int("FRONTDOOR_SECRETS_PER_TENANT", 50)

    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

    DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/frontdoor")
    REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
    FRONTDOOR_REDIS_PREFIX = env_str("FRONTDOOR_REDIS_PREFIX", "fd")
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
    # The queue tasks go to when they name none, and a prefix for every key Celery keeps in Redis (queues, unacked
    # tasks, bindings, remote control): with both, two installations or a test run share one Redis database.
    FRONTDOOR_CELERY_QUEUE = env_str("FRONTDOOR_CELERY_QUEUE", "celery")
    FRONTDOOR_CELERY_KEY_PREFIX = env_str("FRONTDOOR_CELERY_KEY_PREFIX", "")
    FRONTDOOR_TEST_DATABASE = env_str("FRONTDOOR_TEST_DATABASE", "test_frontdoor")

    # Backends: "local" (embedded default) or "kubernetes".
    FRONTDOOR_BACKEND = env_str("FRONTDOOR_BACKEND", "local")
    FRONTDOOR_GATEWAY_URL = env_str("FRONTDOOR_GATEWAY_URL", "http://127.0.0.1:8001")
    FRONTDOOR_RESYNC_SECONDS = env_float("FRONTDOOR_RESYNC_SECONDS", 30.0)
    # A replica runs on one node (replicas spanning nodes are not supported): more GPUs per replica than a node has
    # would never schedule, so the API refuses them on the Kubernetes backend.
    FRONTDOOR_K8S_GPUS_PER_NODE = env_int("FRONTDOOR_K8S_GPUS_PER_NODE", 8)
    FRONTDOOR_GPU_TYPES = env_list("FRONTDOOR_GPU_TYPES", ["nvidia-h100", "nvidia-h200", "nvidia-a100", "nvidia-l4"])
    LOGIN_RATE_LIMIT_PER_MINUTE = env_int("FRONTDOOR_LOGIN_RATE_LIMIT", 10)
    # GPUs the cluster has, by type: the staff capacity view compares quotas and allocations against it.
    FRONTDOOR_CLUSTER_GPU_CAPACITY = env_gpu_counts("FRONTDOOR_CLUSTER_GPU_CAPACITY")

    # The address policy for tenant-given URLs (external endpoints, webhooks; deployments/network.py): networks
    # allowed beyond the public internet, and the platform's own listeners, refused even inside those networks.
    FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = _networks(
        "FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", env_list("FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", [])
    )
    FRONTDOOR_LOCAL_AGENT_HOST = env_str("FRONTDOOR_LOCAL_AGENT_HOST", "127.0.0.1")
    FRONTDOOR_LOCAL_AGENT_PORT = env_int("FRONTDOOR_LOCAL_AGENT_PORT", 8002)
    FRONTDOOR_WEB_ADDRESS = _host_port(
        "FRONTDOOR_WEB_ADDRESS", env_str("FRONTDOOR_WEB_ADDRESS", f"127.0.0.1:{env_int('WEB_PORT', 8000)}")
    )
    FRONTDOOR_PLATFORM_ADDRESSES = [
        _host_port("FRONTDOOR_PLATFORM_ADDRESSES", item) for item in env_list("FRONTDOOR_PLATFORM_ADDRESSES", [])
    ]

    # Single sign-on through an OpenID Connect provider (tenants/sso/, docs/console.md): off without an issuer.
    FRONTDOOR_OIDC = read_oidc_settings(production=PRODUCTION)
    FRONTDOOR_PASSWORD_SIGN_IN = read_password_sign_in(FRONTDOOR_OIDC)

    # The Batch API (docs/batch.md). The internal token authenticates the gateway to the control plane and the batch
    # workers to the gateway; both read the same value.
    FRONTDOOR_INTERNAL_TOKEN = internal_token_from_env()
    FRONTDOOR_BATCH_STORAGE = env_str("FRONTDOOR_BATCH_STORAGE", "local")
    FRONTDOOR_BATCH_FILES_DIR = env_str("FRONTDOOR_BATCH_FILES_DIR", str(BASE_DIR / "var" / "files"))
    FRONTDOOR_BATCH_S3_BUCKET = env_str("FRONTDOOR_BATCH_S3_BUCKET", "")
    FRONTDOOR_BATCH_S3_ENDPOINT_URL = env_str("FRONTDOOR_BATCH_S3_ENDPOINT_URL", "")
    FRONTDOOR_BATCH_S3_REGION = env_str("FRONTDOOR_BATCH_S3_REGION", "")
    FRONTDOOR_BATCH_S3_PREFIX = env_str("FRONTDOOR_BATCH_S3_PREFIX", "frontdoor")
    FRONTDOOR_BATCH_MAX_FILE_BYTES = env_int("FRONTDOOR_BATCH_MAX_FILE_BYTES", 200 * 1024 * 1024)
    FRONTDOOR_BATCH_MAX_LINES = env_int("FRONTDOOR_BATCH_MAX_LINES", 50_000)
    FRONTDOOR_BATCH_MAX_LINE_BYTES = env_int("FRONTDOOR_BATCH_MAX_LINE_BYTES", 1024 * 1024)
    FRONTDOOR_BATCH_FILE_RETENTION_S = env_int("FRONTDOOR_BATCH_FILE_RETENTION_S", 30 * 86400)
    FRONTDOOR_BATCH_WINDOW_S = env_int("FRONTDOOR_BATCH_WINDOW_S", 86400)
    FRONTDOOR_BATCH_CONCURRENCY = env_int("FRONTDOOR_BATCH_CONCURRENCY", 8)
    FRONTDOOR_BATCH_LINE_ATTEMPTS = env_int("FRONTDOOR_BATCH_LINE_ATTEMPTS", 10)
    FRONTDOOR_BATCH_LINE_TIMEOUT_S = env_float("FRONTDOOR_BATCH_LINE_TIMEOUT_S", 300.0)
    FRONTDOOR_BATCH_CLAIM_S = env_float("FRONTDOOR_BATCH_CLAIM_S", 360.0)
    FRONTDOOR_BATCH_TASK_SECONDS = env_float("FRONTDOOR_BATCH_TASK_SECONDS", 50.0)
    FRONTDOOR_BATCH_TICK_SECONDS = env_float("FRONTDOOR_BATCH_TICK_SECONDS", 5.0)
    # The share of a deployment's max_replicas batch lines may keep busy, or wake from zero (0 to 1).
    FRONTDOOR_BATCH_REPLICA_SHARE = env_float("FRONTDOOR_BATCH_REPLICA_SHARE", 0.5)

    # E-mail (owner invitations of tenants staff create). Development prints messages on the web process's output.
    _MAIL_BACKEND = "smtp" if PRODUCTION else "console"
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", f"django.core.mail.backends.{_MAIL_BACKEND}.EmailBackend")
    EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
    EMAIL_PORT = env_int("EMAIL_PORT", 25)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)  # seconds; a mail server that hangs must not hang the page
    DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Frontdoor <frontdoor@localhost>")
except ImproperlyConfiguredEnv as exc:
    raise ImproperlyConfigured(str(exc)) from exc

if FRONTDOOR_BACKEND not in {"local", "kubernetes"}:
    raise ImproperlyConfigured(f"FRONTDOOR_BACKEND={FRONTDOOR_BACKEND!r}: use 'local' or 'kubernetes'")
if FRONTDOOR_BATCH_STORAGE not in {"local", "s3"}:
    raise ImproperlyConfigured(f"FRONTDOOR_BATCH_STORAGE={FRONTDOOR_BATCH_STORAGE!r}: use 'local' or 's3'")
if FRONTDOOR_BATCH_STORAGE == "s3" and not FRONTDOOR_BATCH_S3_BUCKET:
    raise ImproperlyConfigured("FRONTDOOR_BATCH_STORAGE=s3 needs FRONTDOOR_BATCH_S3_BUCKET")
if not 0 <= FRONTDOOR_BATCH_REPLICA_SHARE <= 1:
    raise ImproperlyConfigured("FRONTDOOR_BATCH_REPLICA_SHARE must be between 0 and 1")
if FRONTDOOR_BATCH_CLAIM_S <= FRONTDOOR_BATCH_LINE_TIMEOUT_S:
    raise ImproperlyConfigured("FRONTDOOR_BATCH_CLAIM_S must exceed FRONTDOOR_BATCH_LINE_TIMEOUT_S")
if EMAIL_USE_TLS and EMAIL_USE_SSL:  # Django would refuse it only when the first invitation is sent
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: STARTTLS or implicit TLS, not both")


def _batch_storage() -> dict[str, object]:
    """The batch files' storage: a local directory, or an S3-compatible bucket (credentials from boto3's chain)."""
    if FRONTDOOR_BATCH_STORAGE == "local":
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": FRONTDOOR_BATCH_FILES_DIR, "allow_overwrite": True},
        }
    options: dict[str, object] = {
        "bucket_name": FRONTDOOR_BATCH_S3_BUCKET,
        "location": FRONTDOOR_BATCH_S3_PREFIX,
        "file_overwrite": True,
        "default_acl": None,
        "querystring_auth": False,
    }
    if FRONTDOOR_BATCH_S3_ENDPOINT_URL:
        options["endpoint_url"] = FRONTDOOR_BATCH_S3_ENDPOINT_URL
    if FRONTDOOR_BATCH_S3_REGION:
        options["region_name"] = FRONTDOOR_BATCH_S3_REGION
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "batch_files": _batch_storage(),
}


def _database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "frontdoor",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "127.0.0.1",
        "PORT": str(parsed.port or 5432),
        "CONN_MAX_AGE": 0,
        # With the pool, Django checks a connection as it hands it out: a Postgres restart costs no failed request.
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": 8, "timeout": 10}},
        "TEST": {"NAME": FRONTDOOR_TEST_DATABASE},
    }


DATABASES = {"default": _database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served as the project's own static files
    "django_htmx",
    "tenants",
    "quotas",
    "deployments",
    "batches",
    "controlplane.snapshot",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "controlplane.middleware.HostileRequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "controlplane.middleware.RequestIdMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.context_processors.gateway",
            ],
            # controlplane is no installed app (it has no models): its template tags are registered by name.
            "libraries": {"humanize_fd": "controlplane.templatetags.humanize_fd"},
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
# One backend does passwords and the provider's code flow (tenants/sso/backend.py); Django's own without an issuer.
AUTHENTICATION_BACKENDS = [
    "tenants.sso.backend.SignInBackend" if FRONTDOOR_OIDC else "django.contrib.auth.backends.ModelBackend"
]

REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": [
        "controlplane.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.permissions.IsAuthenticatedPrincipal"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Frontdoor control plane API",
    "DESCRIPTION": "Tenants, members, API keys, quotas, model deployments, revisions and usage.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Schema generation calls Model.objects.none(); our fail-closed `objects` managers refuse unscoped use.
    "DEFAULT_QUERY_MANAGER": "_default_manager",
    # Two choice sets are named "kind"; the secrets' gets a name of its own.
    "ENUM_NAME_OVERRIDES": {"SecretKindEnum": "deployments.models.secret.TenantSecret.Kind"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.schema.add_error_responses",
    ],
    # The docs pages load Swagger UI and Redoc from our static files (drf-spectacular-sidecar, pinned in
    # pyproject.toml), never from a CDN: they work offline and run no third-party script.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No online validator badge (it would send the schema's URL to a third party); Redoc in the system fonts.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {"fontFamily": "system-ui, sans-serif", "headings": {"fontFamily": "system-ui, sans-serif"}}
        }
    },
}

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task re-delivered after a crash must not wait an hour: visibility timeout bounds the redelivery delay.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": env_int("FRONTDOOR_TASK_VISIBILITY_TIMEOUT", 600)
}
if FRONTDOOR_CELERY_KEY_PREFIX:
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = FRONTDOOR_CELERY_KEY_PREFIX
CELERY_TASK_DEFAULT_QUEUE = FRONTDOOR_CELERY_QUEUE
CELERY_TASK_ALWAYS_EAGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Invitation tokens travel in URLs (and in ?next=); the filter cuts them out of every record.
    "filters": {"redact_secrets": {"()": "controlplane.logredact.RedactSecretsFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Beat sends a tick every 2 s: "sending"/"received" lines per tick would drown what the tasks log. Task results,
    # retries and failures (celery.app.trace) stay visible.
    "loggers": {
        **{name: {"level": "WARNING"} for name in ("celery.worker.strategy", "celery.beat")},
        # Django's default handlers for its own loggers would print request paths without the filter.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# Production hardening; `manage.py check --deploy --fail-level WARNING` passes with these.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Periodic work (celery beat). Task names are the contract; each task module registers its own name.
CELERY_BEAT_SCHEDULE = {
    "resync-deployments": {"task": "deployments.resync_all", "schedule": FRONTDOOR_RESYNC_SECONDS},
    "rollup-usage": {"task": "quotas.rollup_usage", "schedule": env_float("FRONTDOOR_ROLLUP_SECONDS", 2.0)},
    "republish-config": {"task": "quotas.publish_config", "schedule": 60.0},
    "prune-usage": {"task": "quotas.prune_usage_seen", "schedule": 600.0},
    "prune-idempotency": {"task": "tenants.prune_idempotency_records", "schedule": 3600.0},
    # Ticks expire before the next one is due, so a busy worker never works through a backlog of stale ticks.
    "autoscale-tick": {"task": "deployments.autoscale_tick", "schedule": 2.0, "options": {"expires": 1.5}},
    "collect-slo": {"task": "deployments.collect_slo", "schedule": 10.0, "options": {"expires": 8.0}},
    "rollout-tick": {"task": "deployments.rollout_tick", "schedule": 10.0, "options": {"expires": 8.0}},
    "batch-tick": {
        "task": "batches.tick",
        "schedule": FRONTDOOR_BATCH_TICK_SECONDS,
        "options": {"expires": FRONTDOOR_BATCH_TICK_SECONDS},
    },
}
FRONTDOOR_IDEMPOTENCY_RETENTION_S = env_int("FRONTDOOR_IDEMPOTENCY_RETENTION_S", 24 * 3600)

# Usage rollup and publishing (docs/usage.md).
FRONTDOOR_USAGE_BATCH_SIZE = env_int("FRONTDOOR_USAGE_BATCH_SIZE", 500)
FRONTDOOR_USAGE_CLAIM_IDLE_MS = env_int("FRONTDOOR_USAGE_CLAIM_IDLE_MS", 30_000)
FRONTDOOR_USAGE_MAX_SECONDS = env_float("FRONTDOOR_USAGE_MAX_SECONDS", 1.5)
FRONTDOOR_USAGE_STREAM_RETENTION_S = env_int("FRONTDOOR_USAGE_STREAM_RETENTION_S", 3600)
FRONTDOOR_USAGE_SEEN_RETENTION_S = env_int("FRONTDOOR_USAGE_SEEN_RETENTION_S", 7 * 24 * 3600)
FRONTDOOR_PUBLISH_ON_COMMIT = env_bool("FRONTDOOR_PUBLISH_ON_COMMIT", True)

# The gateway snapshot's publisher (controlplane/snapshot/coalesce.py): "queue" runs it on its own Celery queue, which
# a worker of its own consumes (``python -m controlplane.snapshot.worker``); "inline" runs it in the committing process
# (one process, no worker). It builds at most once per interval, covering every commit marked meanwhile.
FRONTDOOR_SNAPSHOT_PUBLISH = env_str("FRONTDOOR_SNAPSHOT_PUBLISH", "queue")
if FRONTDOOR_SNAPSHOT_PUBLISH not in ("queue", "inline"):
    raise ImproperlyConfigured("FRONTDOOR_SNAPSHOT_PUBLISH must be 'queue' or 'inline'")
FRONTDOOR_SNAPSHOT_QUEUE = env_str("FRONTDOOR_SNAPSHOT_QUEUE", f"{FRONTDOOR_CELERY_QUEUE}.snapshot")
FRONTDOOR_SNAPSHOT_INTERVAL_S = env_float("FRONTDOOR_SNAPSHOT_INTERVAL_S", 0.25)
# The batch workers' queue (``python -m batches.worker``): batch runs never queue behind reconciles and ticks.
FRONTDOOR_BATCH_QUEUE = env_str("FRONTDOOR_BATCH_QUEUE", f"{FRONTDOOR_CELERY_QUEUE}.batch")
# Queued, the periodic full rebuild goes to the publisher's queue too; inline, to the default queue (no publisher).
CELERY_TASK_ROUTES = {
    name: {"queue": FRONTDOOR_SNAPSHOT_QUEUE}
    for name in ("snapshot.publish", "quotas.publish_config")
    if FRONTDOOR_SNAPSHOT_PUBLISH == "queue"
}
