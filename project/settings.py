"""Settings of the beluga_workflows demo project.

Everything deployment-specific comes from the environment:

- `DATABASE_URL` (any dj-database-url URL) and `CELERY_BROKER_URL`. When either is unset, the
  embedded default supplies it: a real PostgreSQL and Redis started from wheels under
  `BELUGA_DATA_DIR` (default `<repo>/.data`); see `project/embedded.py`.
- `BELUGA_EXECUTOR` (`default` or `temporal`; when unset, the choice `make run` remembered in
  `<data dir>/executor`, else `default`), `BELUGA_TEMPORAL_HOST`,
  `BELUGA_TEMPORAL_NAMESPACE`, `BELUGA_TEMPORAL_TASK_QUEUE`, `BELUGA_POLL_INTERVAL`,
  `BELUGA_REDISPATCH_AFTER`, `BELUGA_CACHE_SIZE`.
- `DJANGO_DEBUG` (off unless set; `make run` turns it on for the demo), `DJANGO_SECRET_KEY`
  (required with a real `DATABASE_URL` and `DEBUG` off; on this checkout's embedded services or
  with `DEBUG` on, a key is generated once and kept in the data directory),
  `DJANGO_ALLOWED_HOSTS`, `DJANGO_CSRF_TRUSTED_ORIGINS`, `DJANGO_LOG_LEVEL`.

`project/settings_production.py` is an example for a real deployment (`check --deploy` clean).
"""

import os
from pathlib import Path

import dj_database_url

from project import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = _env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if key:
        return key
    if not DEBUG and os.environ.get("DATABASE_URL"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            'Set DJANGO_SECRET_KEY (for example from `python -c "from django.core.management.'
            'utils import get_random_secret_key as k; print(k())"`): DEBUG is off and the '
            "database is a real one, and a deployment must not run with a made-up key."
        )
    # Local use only (debug on, or the embedded services of this checkout): one random key
    # per checkout, kept beside the embedded services' data.
    path = embedded.default_data_dir() / "secret-key.txt"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Debug pages (DEBUG on) hide settings whose names say they are secrets; ours also hides
# connection URLs, which carry passwords.
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.security.ExceptionReporterFilter"
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")


# Services. Only the missing ones are started, so an external database can be paired with
# the embedded broker and the other way round.
DATABASE_URL = os.environ.get("DATABASE_URL") or embedded.ensure_database()
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or embedded.ensure_broker()

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "beluga_workflows",
    "project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "admin:login"


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    # Views narrow this further with Django model permissions.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "beluga_workflows API",
    "DESCRIPTION": "Start, signal, query and cancel durable workflow runs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema names every registered workflow: signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


# Celery, read by project/celery.py under the CELERY_ namespace.
# Acks after the task ran and requeue when the worker process dies, one message at a time:
# the engine keeps its own deadlines in the database, this just avoids losing work early.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Results live in the workflow history, never in a Celery result backend.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE


def _remembered_executor() -> str:
    # `make run` writes its executor here (project/dev.py), so `manage.py shell` in another
    # terminal of this checkout starts runs on the engine that its worker serves.
    try:
        return (embedded.default_data_dir() / "executor").read_text().strip()
    except OSError:
        return ""


BELUGA_WORKFLOWS = {
    "EXECUTOR": os.environ.get("BELUGA_EXECUTOR") or _remembered_executor() or "default",
    "TEMPORAL": {
        "HOST": os.environ.get("BELUGA_TEMPORAL_HOST") or "localhost:7233",
        "NAMESPACE": os.environ.get("BELUGA_TEMPORAL_NAMESPACE") or "default",
        "TASK_QUEUE": os.environ.get("BELUGA_TEMPORAL_TASK_QUEUE") or "beluga-workflows",
    },
    "POLL_INTERVAL": float(os.environ.get("BELUGA_POLL_INTERVAL") or 1.0),
    "REDISPATCH_AFTER": float(os.environ.get("BELUGA_REDISPATCH_AFTER") or 30),
    "CACHE_SIZE": int(os.environ.get("BELUGA_CACHE_SIZE") or 256),
}


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "beluga_workflows": {
            "handlers": ["console"],
            "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "celery": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
