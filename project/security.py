"""What the demo's error pages may show: no passwords, even inside connection URLs."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django hides settings named like ``*KEY*``, ``*PASS*``, ``*TOKEN*``...; this also hides
    ``*URL*`` ones (``DATABASE_URL``, ``CELERY_BROKER_URL``: ``scheme://user:password@host``)."""

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|URL", flags=re.IGNORECASE)
