"""An example of production settings: the demo's, hardened (`manage.py check --deploy` clean).

Use it (or copy what it sets into your own settings) behind HTTPS:

    DJANGO_SETTINGS_MODULE=project.settings_production \\
    DJANGO_SECRET_KEY=... DJANGO_ALLOWED_HOSTS=workflows.example.com \\
    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... gunicorn project.wsgi

`DEBUG` is off and `DJANGO_SECRET_KEY` is required (the demo settings refuse to start
without one), cookies are sent over HTTPS only, and browsers are told to keep to HTTPS.
"""

import os

os.environ["DJANGO_DEBUG"] = "0"

from project.settings import *  # noqa: E402,F403

DEBUG = False
SECURE_SSL_REDIRECT = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
