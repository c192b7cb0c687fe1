"""The demo Django project for beluga_workflows.

The Celery app is imported here, as Celery's Django guide recommends, so that `shared_task`
decorators in installed apps bind to it whenever Django starts.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
