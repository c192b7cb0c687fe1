"""The demo project's Celery application.

Configured from Django settings under the `CELERY_` prefix; tasks are discovered in the
`tasks.py` modules of installed apps (beluga_workflows registers its own).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
