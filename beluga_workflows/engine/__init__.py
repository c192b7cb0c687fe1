"""The built-in durable engine: runs and their history in Django models, work on Celery.

Layers, bottom up: :mod:`.store` (rows and locks) → :mod:`.runs` (start, signal, cancel) and
:mod:`.steps` (advance, activity outcomes, timers) → :mod:`.activities` (running an attempt)
→ :mod:`.sweeper` (recovery). Adapters — Celery tasks, the worker, executors, REST, admin,
CLI — call these and never write rows themselves.
"""
