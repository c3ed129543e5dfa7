"""All configuration comes from the environment; unset, each value falls back to the
embedded default (SQLite and Celery's filesystem broker under var/, a local outbox).

The README lists every variable.
"""

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from memo_service.config import keys, logs, security
from memo_service.memos.evidence import checkpoints

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# Off unless set: a forgotten variable must not serve tracebacks or take a development
# key. `make run` and the tests turn it on.
DEBUG = env.bool("DEBUG", default=False)
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
# What the service keeps there (the SQLite database, the outbox, the broker's messages,
# the keys, the evidence heads) is its owner's alone, whatever umask it was started with:
# the folder 0700, and everything this process creates 0600 (0700 for folders).
os.umask(0o077)
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
VAR_DIR.chmod(0o700)


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = keys.var_secret(VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(50))
# Old keys go here when SECRET_KEY rotates, so links already emailed keep working.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
if not DEBUG:
    # None, one written in the repository, or a short one (memo_service/config/keys.py).
    keys.refuse_unsafe_secret_key(SECRET_KEY, SECRET_KEY_FALLBACKS, BASE_DIR)

# Signs the evidence chain's checkpoints (memos/evidence/checkpoints.py): base64 of a raw 32-byte
# Ed25519 private key. Kept out of the database, so whoever can write the database
# cannot sign a rewritten chain.
EVIDENCE_SIGNING_KEY = keys.embedded_secret(
    "EVIDENCE_SIGNING_KEY",
    env.str("EVIDENCE_SIGNING_KEY", default=""),
    debug=DEBUG,
    path=VAR_DIR / "evidence-signing-key",
    make=checkpoints.new_private_key,
)
keys.refuse_unsafe_evidence_signing_key(EVIDENCE_SIGNING_KEY, debug=DEBUG, base_dir=BASE_DIR)

# Public keys (base64, raw 32 bytes) of signing keys no longer in use: checkpoints they
# signed still verify after EVIDENCE_SIGNING_KEY is rotated. `manage.py evidence_key`
# prints the current key's public half, to put here before replacing it.
EVIDENCE_RETIRED_KEYS = env.list("EVIDENCE_RETIRED_KEYS", default=[])
keys.refuse_bad_retired_keys(EVIDENCE_RETIRED_KEYS)

# Every signed checkpoint is also appended here as it is sealed (a JSON line), outside
# the database (memos/evidence/heads.py): verify_evidence reads it, so a chain cut short,
# re-sealed or erased in the database fails. A path on the workers' own disk or a mounted
# append-only bucket in production; empty: not published to a file.
EVIDENCE_HEADS_PATH = env.str("EVIDENCE_HEADS_PATH", default=str(VAR_DIR / "evidence-heads.jsonl"))


SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",  # intcomma: counts in the admin read 1,692 (ids stay bare)
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "anymail",
    "axes",
    "django_countries",
    "memo_service.developers",
    "memo_service.memos",
    "memo_service.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The sync API's bodies: too large (413) or unreadable JSON (400), with the reason.
    "memo_service.api.limits.ApiBodyLimits",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The browser's language for the developer's pages and the error pages; English in
    # the admin, the outbox and the API (memo_service/lib/site_language.py says why).
    "memo_service.lib.site_language.SiteLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login
]

# Admin logins: django-axes counts failed ones per username and address (the address as
# client_ip reads it, TRUSTED_PROXY_COUNT included) and locks that pair out for a while
# after AXES_FAILURE_LIMIT; superusers see the attempts and lockouts under **Axes**, and
# `manage.py axes_reset` lifts them.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_MINUTES", default=15.0) / 60  # hours, as axes takes it
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "memo_service.memos.answer.views.client_ip"

# Every page but the developer's gets this policy (memo_service/config/security.py).
CONTENT_SECURITY_POLICY = security.CONTENT_SECURITY_POLICY

ROOT_URLCONF = "memo_service.urls"
WSGI_APPLICATION = "memo_service.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'memo.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web server read while a worker writes; IMMEDIATE takes the write
        # lock at BEGIN, so a claim (select, then update) cannot interleave with another.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Reusing connections roughly triples acknowledgement POSTs per second (DESIGN.md).
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Counts invalid acknowledgement links per address (rate limiting). The default is per
# process; with several web processes point it at Redis: CACHE_URL=redis://host:6379/1
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- email -------------------------------------------------------------------------
# The embedded default writes every message to var/outbox/ (browse it at /outbox/).
# Any anymail provider works by settings alone, e.g.
#   EMAIL_BACKEND=anymail.backends.mailgun.EmailBackend ANYMAIL_MAILGUN_API_KEY=...
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="memo_service.outbox.OutboxEmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Platform notices <notices@example.com>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
OUTBOX_DIR = VAR_DIR / "outbox"


# Every ANYMAIL_<NAME> variable becomes ANYMAIL["<NAME>"] (anymail's own settings:
# ANYMAIL_WEBHOOK_SECRET, ANYMAIL_MAILGUN_API_KEY, ANYMAIL_MAILGUN_API_URL, ...).
def _anymail_value(value: str) -> str | bool:
    # anymail's boolean settings (DEBUG_API_REQUESTS, IGNORE_UNSUPPORTED_FEATURES, ...)
    # would take any non-empty string, "false" included, as true.
    return {"true": True, "false": False}.get(value.strip().lower(), value)


ANYMAIL = {
    key.removeprefix("ANYMAIL_"): _anymail_value(value)
    for key, value in env.ENVIRON.items()
    if key.startswith("ANYMAIL_")
}
# The tracking webhook refuses every event without it (memos/tracking.py); the embedded
# default makes one under VAR_DIR (`make run` prints where). With DEBUG off it must be set
# for events to be accepted, but its absence does not stop the rest of the service.
if not ANYMAIL.get("WEBHOOK_SECRET") and DEBUG:
    ANYMAIL["WEBHOOK_SECRET"] = keys.embedded_secret(
        "ANYMAIL_WEBHOOK_SECRET",
        env.str("ANYMAIL_WEBHOOK_SECRET", default=""),
        debug=DEBUG,
        path=VAR_DIR / "anymail-webhook-secret",
        make=lambda: "hook:" + secrets.token_urlsafe(24),
    )

# --- Celery --------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    (BROKER_DIR / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # kombu's default is ./control, wherever the worker happens to start.
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    # Redis re-delivers a task not acked within this many seconds. A send batch takes
    # seconds; an hour is far above the longest task, so nothing is re-delivered while
    # it still runs. (The fault tests set it to 2 s, to show a re-delivered batch sends
    # nobody twice.)
    _visibility_timeout = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _visibility_timeout,
        # How often a worker looks for such tasks: kombu's default, every 10 s × 10,
        # would leave a timeout shorter than 100 s to chance.
        "unacked_restore_interval": max(1, min(10, _visibility_timeout // 2)),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_IGNORE_RESULT = True
# Several deployments (or test runs) can share one broker, each on its own queue.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# Celery's Django fixup closes the database connection before and after every task
# unless this is set, and a new PostgreSQL connection per send task costs more CPU
# than the task's own queries. Set, the fixup leaves connections open (it
# would close them every this-many tasks), and memo_service/celery.py applies
# Django's own rule around each task instead, as after a web request: close a
# connection that is broken or older than CONN_MAX_AGE.
CELERY_DB_REUSE_MAX = 2**31
# A worker that dies mid-batch leaves its task unacknowledged, so the broker hands it
# to another worker; the claim guard on each Delivery makes that redelivery harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One batch at a time per worker process: a prefetched batch would wait behind a slow one.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# anymail's requests time out after 30 s (connect and read); a batch of 100 with a
# slow provider can take minutes, so the soft limit leaves room before it is cut.
CELERY_TASK_SOFT_TIME_LIMIT = 900
CELERY_TASK_TIME_LIMIT = 960
# How often beat starts the scheduled memos whose time has come: a memo scheduled for
# 10:00 starts by 10:00:15. The check is one indexed query, so it can run this often.
SCHEDULED_SEND_CHECK_SECONDS = env.float("SCHEDULED_SEND_CHECK_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE = {
    # Scheduled memos whose time has come (memos/send/dispatch.py: memos_send_scheduled).
    "send-scheduled": {"task": "memos.send_scheduled", "schedule": SCHEDULED_SEND_CHECK_SECONDS},
    # Settles deliveries a lost task or a dead worker left behind (memos/send/sweeper.py).
    "sweep": {"task": "memos.sweep", "schedule": 60.0},
    # Dead workers' expired leases (memos/send/leases.py): one indexed query, so often that an
    # expired lease waits at most half a lease period (DELIVERY_LEASE_SECONDS) for it.
    "recover-leases": {"task": "memos.recover_leases", "schedule": 15.0},
    # Reminders before deadlines (memos/reminders.py).
    "remind": {"task": "memos.remind", "schedule": 60.0},
    # Outbound webhook retries and deadline_passed events (memos/webhooks/: delivery.py, events.py).
    "webhooks": {"task": "memos.webhooks_due", "schedule": 60.0},
    # Chains evidence records a lost sequencer task left pending (memos/evidence/sequencer.py).
    "evidence": {"task": "memos.evidence_seal_due", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- developers ----------------------------------------------------------------------
# A MaxMind GeoIP2/GeoLite2 Country or DB-IP Country Lite .mmdb file that resolves the
# addresses of traffic feeds (developers/geo.py); unset: iptocc's registry data, which
# ships inside the package and gives the country an address is registered to.
GEOIP_DATABASE = env.str("GEOIP_DATABASE", default="")

# --- memos ---------------------------------------------------------------------------
# Emails per second to the provider, shared by all workers (memos/send/throttle.py); 0: none.
SEND_RATE_LIMIT = env.float("SEND_RATE_LIMIT", default=0.0)
# Recipients in any 24 hours, shared by all workers (memos/send/quota.py): an SES account's
# "Max send in 24 hours". A send that reaches it waits for the window to move; 0: none.
try:
    SEND_DAILY_QUOTA = int(env.str("SEND_DAILY_QUOTA", default="0").replace("_", "") or "0")
except ValueError:
    SEND_DAILY_QUOTA = -1
if SEND_DAILY_QUOTA < 0:
    raise ImproperlyConfigured(
        f"SEND_DAILY_QUOTA must be a whole number of recipients per 24 hours (0: no quota), "
        f"not {env.str('SEND_DAILY_QUOTA')!r}"
    )
# A send task's lease on its deliveries (memos/send/leases.py): its worker process renews it
# every DELIVERY_LEASE_RENEW_SECONDS; one not renewed for DELIVERY_LEASE_SECONDS belongs
# to a dead process, and beat's sweeper (every minute) reconciles its deliveries. 10 s
# costs one small UPDATE per process; 30 s outlasts two missed renewals (a database
# blip, a terminated connection) yet lets a crashed send finish within two minutes.
DELIVERY_LEASE_RENEW_SECONDS = env.int("DELIVERY_LEASE_RENEW_SECONDS", default=10)
DELIVERY_LEASE_SECONDS = env.int("DELIVERY_LEASE_SECONDS", default=30)
# How long after an API call its "accepted" event can still be missing from the
# provider's events API (memos/send/reconcile.py): reconciliation asks no sooner, so a message
# the provider took is never taken for one it never got and sent twice. Mailgun's polling
# guide treats recent pages as incomplete (its example threshold is half an hour, for
# every kind of event); "accepted" is written by the host that took the call and shows
# within seconds, so a minute is a wide margin that still finishes a crashed send in
# about two. Raise it if your provider's logs show more lag.
PROVIDER_EVENTS_LAG_SECONDS = env.int("PROVIDER_EVENTS_LAG_SECONDS", default=60)
# How many reverse proxies append to X-Forwarded-For in front of the web server; the
# acknowledgement's recorded IP is the address the outermost of them saw. 0: REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# An acknowledgement link stays valid until the memo's deadline plus this grace period
# (or this long after sending when a memo has no deadline).
ACK_GRACE_DAYS = env.int("ACK_GRACE_DAYS", default=30)
ACK_TOKEN_MAX_AGE_DAYS = env.int("ACK_TOKEN_MAX_AGE_DAYS", default=180)
# Outbound webhooks go to public addresses only (memos/webhooks/netguard.py); true lets
# them reach loopback, private and link-local ones too (tests, a closed network).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=False)

# --- security ------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if not DEBUG else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_REFERRER_POLICY = "same-origin"
# /healthz must answer plain HTTP from a load balancer's probe.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Every handler redacts acknowledgement tokens and Authorization values
# (memo_service/lib/logredact.py; the handlers in memo_service/config/logs.py).
LOGGING = logs.logging_config(level=env.str("LOG_LEVEL", default="INFO"))
