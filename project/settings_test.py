"""Settings for the test suite and `make check`: the demo settings with a throwaway key.

DEBUG stays off, as in production, so the demo settings want a real `DJANGO_SECRET_KEY`; the
tests make one up per process (worker subprocesses inherit it through the environment).
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-" + secrets.token_urlsafe(48))

from project.settings import *  # noqa: E402,F403
