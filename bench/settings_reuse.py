"""Demo settings with database connections kept across Celery tasks — a benchmark diagnostic.

``step_cost --variants default-reuse`` runs the worker with these settings (and
``DJANGO_CONN_MAX_AGE=300``). Celery's Django fix-up closes every database connection before
and after each task unless ``CELERY_DB_REUSE_MAX`` is set, so without it each workflow step
and activity opens a new PostgreSQL connection (a backend process with cold catalog caches).
"""

from project.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1_000_000
