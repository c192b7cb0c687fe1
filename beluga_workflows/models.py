"""Django models: runs, their append-only history, and the work they are waiting on.

* :class:`WorkflowRun` — one execution of a workflow under a user-chosen id.
* :class:`WorkflowEvent` — the history; append-only, unique ``(run, sequence)``, and the
  only input to replay. Signals are events too: the history is the durable signal inbox.
* :class:`ActivityTask` — the current attempt of each activity step: what the broker
  message points at, with the attempt's deadline so a dead worker is noticed.
* :class:`Timer` — durable timers (sleeps, signal-wait timeouts, workflow timeouts).
* :class:`WorkerHeartbeat` — a ``runworker`` process announcing itself (:mod:`.heartbeats`).

Only :mod:`beluga_workflows.engine` writes the run rows (and, on Temporal, the mirror copies
them; :mod:`.retention` deletes closed ones); each worker writes its own heartbeat row.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce

from .options import ParentClosePolicy, Status


class WorkflowRun(models.Model):
    workflow_id = models.CharField(max_length=255, db_index=True)
    run_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workflow_name = models.CharField(max_length=255, db_index=True)
    #: ``module:qualname`` of the workflow function, so any worker can import it.
    workflow_reference = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in Status], default=Status.RUNNING.value
    )
    input = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    #: What the run is blocked on, e.g. ``signal:approval``; empty when not waiting.
    waiting_for = models.CharField(max_length=255, blank=True, default="")
    waiting_since = models.DateTimeField(null=True, blank=True)
    waiting_deadline = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.FloatField(null=True, blank=True)
    #: Number of events; the next event gets ``last_sequence + 1``.
    last_sequence = models.IntegerField(default=0)
    #: Bytes of the history's event details (their JSON), for ``MAX_HISTORY_BYTES``.
    history_bytes = models.BigIntegerField(default=0)
    #: Set when the run has new events a worker has yet to process; the sweeper re-sends
    #: the nudge if it stays set (a lost broker message).
    advance_requested_at = models.DateTimeField(null=True, blank=True)
    #: How many events the workflow function had read when it last stopped (None before its
    #: first step): code reached before that point is replayed (``ctx.patched``).
    decided_through = models.IntegerField(null=True, blank=True)
    #: The run that started this one as a child workflow, and the parent's step.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    parent_step = models.IntegerField(null=True, blank=True)
    parent_close_policy = models.CharField(
        max_length=8,
        choices=[(p.value, p.value) for p in ParentClosePolicy],
        default=ParentClosePolicy.CANCEL.value,
    )
    #: A child whose parent has yet to learn how it ended (the sweeper finishes the job).
    notify_parent = models.BooleanField(default=False)
    #: The run this one continues (``ctx.continue_as_new``): the chain of runs of one id.
    continued_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="continuations"
    )
    #: Running, but held for a fix: its workflow code failed with a bug under
    #: ``ON_WORKFLOW_ERROR = "hold"``. ``{"error", "traceback", "since", "attempts"}``; cleared
    #: by the first pass that succeeds (docs/errors.md).
    held = models.JSONField(null=True, blank=True)
    #: When the sweeper lets a held run's code try again (backoff); None: not held.
    held_retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("signal_workflowrun", "Can signal (approve or reject) workflow runs"),
            ("cancel_workflowrun", "Can cancel workflow runs"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_id"],
                condition=Q(status="running"),
                name="beluga_one_running_run_per_id",
            )
        ]
        indexes = [
            models.Index(
                fields=["advance_requested_at"],
                condition=Q(advance_requested_at__isnull=False),
                name="beluga_run_advance_due",
            ),
            models.Index(
                fields=["waiting_for"],
                condition=Q(status="running"),
                name="beluga_run_waiting",
            ),
            models.Index(
                fields=["closed_at"],
                condition=Q(notify_parent=True),
                name="beluga_run_notify_parent",
            ),
            models.Index(
                fields=["held_retry_at"],
                condition=Q(held_retry_at__isnull=False),
                name="beluga_run_held_retry",
            ),
            # Retention: closed runs, oldest close first (a run closed through a store's
            # ``save`` has no ``closed_at``; its last update stands in).
            models.Index(
                Coalesce("closed_at", "updated_at"),
                condition=~Q(status="running"),
                name="beluga_run_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} ({self.status})"

    @property
    def status_enum(self) -> Status:
        return Status(self.status)


class WorkflowEvent(models.Model):
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="events")
    sequence = models.IntegerField()
    type = models.CharField(max_length=32)
    step = models.IntegerField(null=True, blank=True)
    name = models.CharField(max_length=255, blank=True, default="")
    attempt = models.IntegerField(default=0)
    data = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField()

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="beluga_event_sequence")
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.type} {self.name}".strip()


class ActivityTask(models.Model):
    class State(models.TextChoices):
        SCHEDULED = "scheduled"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELED = "canceled"

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="activity_tasks")
    step = models.IntegerField()
    name = models.CharField(max_length=255)
    reference = models.CharField(max_length=500)
    input = models.JSONField(null=True, blank=True)
    options = models.JSONField(default=dict)
    attempt = models.IntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCHEDULED)
    #: The attempt may not start before this (retry backoff).
    not_before = models.DateTimeField()
    #: The attempt fails with a timeout after this, even if the worker running it died. Once
    #: it started: its start-to-close end (capped by schedule-to-close); before: its
    #: schedule-to-start end or its schedule-to-close end, whichever is sooner, else none —
    #: an attempt waiting for a free worker is not late (see ``engine/timeouts.py``).
    deadline = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField()
    #: When a worker started the current attempt (None: scheduled, not started yet).
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat = models.JSONField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="beluga_activity_step")]
        indexes = [
            models.Index(
                fields=["deadline"],
                condition=Q(state="scheduled"),
                name="beluga_activity_open",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (step {self.step}, attempt {self.attempt}, {self.state})"


class Timer(models.Model):
    class Kind(models.TextChoices):
        SLEEP = "sleep"
        SIGNAL_TIMEOUT = "signal_timeout"
        WORKFLOW_TIMEOUT = "workflow_timeout"

    class State(models.TextChoices):
        PENDING = "pending"
        FIRED = "fired"
        CANCELED = "canceled"

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="timers")
    step = models.IntegerField(null=True, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    fire_at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)

    class Meta:
        indexes = [
            models.Index(fields=["fire_at"], condition=Q(state="pending"), name="beluga_timer_due")
        ]

    def __str__(self) -> str:
        return f"{self.kind} at {self.fire_at:%Y-%m-%d %H:%M:%S} ({self.state})"


class WorkerHeartbeat(models.Model):
    """A ``runworker`` process, as it last announced itself (:mod:`.heartbeats`).

    Each worker inserts its row at start, refreshes ``last_beat`` every ``interval`` seconds
    and deletes the row when it stops cleanly; a row whose beat is older than 3 intervals
    belongs to a worker that is not live (killed, frozen, or cut off from the database).
    """

    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    #: The executor it serves: ``default`` (the built-in engine) or ``temporal``.
    executor = models.CharField(max_length=32)
    #: Celery queues (built-in engine) or the Temporal task queue it takes work from.
    queues = models.JSONField(default=list)
    concurrency = models.IntegerField()
    pool = models.CharField(max_length=16, blank=True, default="")
    #: Whether it runs the sweeper (fires due timers, recovers lost work): built-in engine.
    sweeper = models.BooleanField(default=False)
    #: Seconds between its beats, as it was configured.
    interval = models.FloatField()
    started_at = models.DateTimeField()
    #: Written with the database's clock, and compared with it: hosts' clocks may differ.
    last_beat = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["executor", "host", "pid"]
        verbose_name = "worker"

    def __str__(self) -> str:
        return f"{self.executor} worker {self.pid}@{self.host}"
