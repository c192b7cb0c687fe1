"""``manage.py runworker``: everything the configured executor needs to make progress."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...executors import get_executor
from ...options import check_queue_name


def parse_queues(value: str) -> list[str]:
    """``--queues a,b`` as a list of checked names (duplicates dropped, order kept)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise CommandError("--queues needs at least one queue name, e.g. --queues default,gpu.")
    try:
        return list(dict.fromkeys(check_queue_name(name, "A --queues") for name in names))
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Run a workflow worker for the configured executor: for the built-in engine a Celery "
        "worker (workflow steps and activities) plus timers and recovery; for Temporal a "
        "Temporal worker. Announces itself with a heartbeat (`workflow workers`, "
        "GET /api/workers/) and, with BELUGA_WORKFLOWS['RETENTION'] set, deletes old closed "
        "runs a batch at a time. Stops cleanly on SIGTERM/SIGINT. --queues chooses the queues "
        "it serves (default: the executor's own; see docs/activities.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency", "-c", type=int, default=4, help="Parallel activities (default 4)."
        )
        parser.add_argument(
            "--pool",
            default="threads",
            choices=["threads", "prefork", "solo"],
            help="Celery pool for the built-in engine (default threads).",
        )
        parser.add_argument("--loglevel", "-l", default="INFO")
        parser.add_argument(
            "--no-sweep",
            action="store_true",
            help="Do not run the timer/recovery sweeper in this process (run it elsewhere).",
        )
        parser.add_argument(
            "--queues",
            "-Q",
            default=None,
            help="Comma-separated queues to serve (default: 'default'). 'default' is the "
            "executor's own queues (built-in engine: workflow steps and activities; Temporal: "
            "TEMPORAL['TASK_QUEUE']); any other name serves the activities sent there with "
            "workflow.with_activity_queue(name). '--queues gpu' serves only the gpu "
            "activities; '--queues default,gpu' serves everything.",
        )
        parser.add_argument(
            "--no-mirror",
            action="store_true",
            help="Temporal: do not copy runs into the Django models from this process (other "
            "workers' mirrors catch up, at the latest on their periodic full check).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.")
        executor = get_executor()
        kwargs: dict[str, Any] = {"loglevel": options["loglevel"]}
        if options["queues"] is not None:
            kwargs["queues"] = parse_queues(options["queues"])
        if executor.name == "default":
            kwargs.update(pool=options["pool"], sweep=not options["no_sweep"])
        elif options["no_mirror"]:
            kwargs.update(mirror=False)
        self.stdout.write(f"Starting the {executor.name} workflow worker", ending="\n")
        self.stdout.flush()
        executor.worker(concurrency=options["concurrency"], **kwargs).run()
