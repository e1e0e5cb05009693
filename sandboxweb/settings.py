"""sandboxweb settings: one module, driven by environment variables (see README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import dj_database_url

from . import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.get_str("SANDBOXWEB_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env.get_bool("DEBUG", False)
SECRET_KEY = env.secret_key("SECRET_KEY", VAR_DIR / "secret_key")
ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ninja",  # its Swagger UI files, served by staticfiles (no CDN)
    "apps.core",
    "apps.projects",
    "apps.runs",
    "apps.teams",
    "apps.limits",
    "apps.audit",
    "apps.reviews",
    "apps.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # After CSPMiddleware: on the way out it runs first and adds this host's ws(s):// origin.
    "apps.core.security.WebSocketOriginCSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.audit.context.AuditContextMiddleware",
]

ROOT_URLCONF = "sandboxweb.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "sandboxweb.asgi.application"

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
                "apps.teams.context_processors.nav_counts",
            ],
        },
    },
]

DATABASE_URL = env.get_database_url("DATABASE_URL", f"sqlite:///{VAR_DIR / 'sandboxweb.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Workers and the web server write concurrently; WAL + a busy timeout keep SQLite usable.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not :memory:, so Celery worker processes started by the tests see the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # A silent network partition (no reset ever arrives) must not block a worker's event writes
    # forever: give up connecting after 10 s, probe idle connections, and drop one whose sent data
    # goes unacknowledged for 30 s. The recorder's retries take it from there. Options set in
    # DATABASE_URL's query string win.
    for option, value in {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(option, value)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.get_url(
    "REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix")
)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
    }
}

# Celery: late acks + reject on worker loss so a dead worker's run is redelivered; the run
# itself is claimed with a conditional UPDATE, which makes redelivery safe.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_MAX_TASKS_PER_CHILD = 50
# A broker blip must not kill running runs: Celery would SIGTERM every unacked late-ack task
# (the sandbox keeps going, the run ends crashed a lease later). A run is guarded by its database
# lease instead, so a redelivered copy finds it claimed and exits (tests/reliability).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_DEFAULT_QUEUE = env.get_str("CELERY_QUEUE", "sandboxweb")
# The sweeper (apps/runs/tasks.py) also runs once when a worker starts; beat repeats it.
CELERY_BEAT_SCHEDULE = {
    "runs-sweep": {"task": "runs.sweep", "schedule": env.get_int("RUN_SWEEP_SECONDS", 45)},
}

# Sandboxes
DOCKER_HOST = env.get_str("DOCKER_HOST")
if DOCKER_HOST:
    env.get_url(
        "DOCKER_HOST", DOCKER_HOST, schemes=("unix", "tcp", "ssh", "npipe", "http", "https")
    )
# Our default image: pulled where a registry has it, else built offline (apps/sandboxes/images.py).
DEFAULT_SANDBOX_IMAGE = "sandboxweb/sandbox:latest"
SANDBOX_IMAGE = env.get_str("SANDBOX_IMAGE", DEFAULT_SANDBOX_IMAGE)
SANDBOX_POOL_SIZE = env.get_int("SANDBOX_POOL_SIZE", 0, minimum=0)
# Part of every run sandbox's name and owner label. Empty = derived from the database identity,
# so two installations sharing a Docker host never touch each other's sandboxes.
SANDBOXWEB_INSTANCE = env.get_str("SANDBOXWEB_INSTANCE", "")
if SANDBOXWEB_INSTANCE and not re.fullmatch(r"[0-9a-z]{1,16}", SANDBOXWEB_INSTANCE):
    raise env.EnvError(
        f"SANDBOXWEB_INSTANCE={SANDBOXWEB_INSTANCE!r} must be 1-16 lowercase letters or digits."
    )
ANTHROPIC_API_KEY = env.get_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env.get_str("ANTHROPIC_BASE_URL")
if ANTHROPIC_BASE_URL:
    env.get_url("ANTHROPIC_BASE_URL", ANTHROPIC_BASE_URL, schemes=("http", "https"))
E2B_API_KEY = env.get_str("E2B_API_KEY")

# Runs (apps/runs). The maxima are the admin's limits: requests above them are clamped at launch
# and again in the worker (apps/runs/limits.py); a later issue moves them into the database.
_MB = 1024 * 1024
RUN_LIMITS = {
    "cpu_cores": float(env.get_int("RUN_MAX_CPU_CORES", 4, minimum=1)),
    "memory_mb": env.get_int("RUN_MAX_MEMORY_MB", 8192, minimum=64),
    "disk_mb": env.get_int("RUN_MAX_DISK_MB", 20480, minimum=64),
    "timeout_seconds": env.get_int("RUN_MAX_TIMEOUT_SECONDS", 6 * 3600, minimum=10),
    "max_turns": env.get_int("RUN_MAX_TURNS", 500, minimum=1),
    "log_limit_mb": env.get_int("RUN_MAX_LOG_MB", 256, minimum=1),
}
# Per-run log cap default: past it output is counted but not stored; past the hard cap (a
# multiple of it) the sandbox is killed and the run ends with reason output_limit.
RUN_LOG_LIMIT_MB = env.get_int("RUN_LOG_LIMIT_MB", 16, minimum=1)
RUN_LOG_HARD_LIMIT_FACTOR = env.get_int("RUN_LOG_HARD_LIMIT_FACTOR", 4, minimum=1)
RUN_STATS_INTERVAL_SECONDS = float(env.get_int("RUN_STATS_INTERVAL_MS", 1500, minimum=250)) / 1000
RUN_LEASE_SECONDS = env.get_int("RUN_LEASE_SECONDS", 60, minimum=10)
RUN_MAX_ATTEMPTS = env.get_int("RUN_MAX_ATTEMPTS", 2, minimum=1)
# Runs whose queue message was lost (Redis restart) are enqueued again after this long.
RUN_REQUEUE_AFTER_SECONDS = env.get_int("RUN_REQUEUE_AFTER_SECONDS", 300, minimum=30)
# Fernet keys for project secrets, newest first (MultiFernet); empty: derived from SECRET_KEY.
SECRETS_KEYS = env.get_list("SECRETS_KEYS", [])
ARTIFACT_MAX_BYTES = env.get_int("ARTIFACT_MAX_MB", 20, minimum=1) * _MB

# REST API (apps/api): requests per token per window, counted in Redis.
API_RATE_LIMIT_REQUESTS = env.get_int("API_RATE_LIMIT_REQUESTS", 600, minimum=1)
API_RATE_LIMIT_WINDOW_SECONDS = env.get_int("API_RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1)
# Requests with a missing/invalid token per client IP per window (bounds token guessing).
API_AUTH_FAILURE_LIMIT_REQUESTS = env.get_int("API_AUTH_FAILURE_LIMIT_REQUESTS", 30, minimum=1)
API_AUTH_FAILURE_WINDOW_SECONDS = env.get_int("API_AUTH_FAILURE_WINDOW_SECONDS", 300, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# --- Web security (docs/security.md; README "Production notes") -----------------------------
# HTTPS=1 says the site is served over TLS (usually by a proxy in front of daphne): cookies
# become Secure, plain-HTTP requests are redirected and HSTS is sent.
HTTPS = env.get_bool("HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.get_bool("SECURE_COOKIES", not DEBUG and HTTPS)
# The pages carry the token in hx-headers / a hidden field; no script reads the cookie.
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", HTTPS)
# Load balancers probe /healthz over plain HTTP inside the network; a redirect would fail them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Behind a TLS-terminating proxy daphne sees plain HTTP: trust the proxy's X-Forwarded-Proto
# (only set this when the proxy overwrites that header on every request, else clients can forge
# it). Without it SECURE_SSL_REDIRECT would redirect forever.
if env.get_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.get_int("HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.get_bool("HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = []
if not SECURE_HSTS_PRELOAD:
    # security.W021 asks for HSTS preload: submitting a domain to the browsers' preload list is
    # hard to undo and covers every subdomain, so it is the domain owner's choice (HSTS_PRELOAD=1).
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# Content-Security-Policy (django-csp): no inline script or style, no eval, nothing from other
# origins. connect-src also gets this host's ws(s):// origin per request (apps/core/security.py)
# because not every browser lets 'self' cover WebSocket URLs. Views that need more widen it with
# csp.decorators.csp_update, never this global policy.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The shared cache (login throttling, apps/core/login_throttle.py) lives in Redis so every web
# process counts the same failures; LocMem would give each process its own count.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sandboxweb",
        # A Redis that does not answer must not hang log-in: the throttle then stands aside.
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}
# Failed log-ins: past LOGIN_FAILURE_LIMIT for one username, or LOGIN_IP_FAILURE_LIMIT from one
# address, within LOGIN_FAILURE_WINDOW_SECONDS, log-in is refused until the window ends.
AUTHENTICATION_BACKENDS = ["apps.core.login_throttle.ThrottledModelBackend"]
LOGIN_FAILURE_LIMIT = env.get_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_IP_FAILURE_LIMIT = env.get_int("LOGIN_IP_FAILURE_LIMIT", 20, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env.get_int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60, minimum=10)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
