"""``manage.py runworker``: everything the configured executor needs to make progress."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...executors import get_executor


class Command(BaseCommand):
    help = (
        "Run a workflow worker for the configured executor: for the built-in engine a Celery "
        "worker (workflow steps and activities) plus timers and recovery; for Temporal a "
        "Temporal worker. Announces itself with a heartbeat (`workflow workers`, "
        "GET /api/workers/) and, with BELUGA_WORKFLOWS['RETENTION'] set, deletes old closed "
        "runs a batch at a time. Stops cleanly on SIGTERM/SIGINT."
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
            "--no-mirror",
            action="store_true",
            help="Temporal: do not copy runs into the Django models from this process (other "
            "workers' mirrors catch up, at the latest on their periodic full check).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            from django.core.management.base import CommandError

            raise CommandError("--concurrency must be at least 1.")
        executor = get_executor()
        kwargs: dict[str, Any] = {"loglevel": options["loglevel"]}
        if executor.name == "default":
            kwargs.update(pool=options["pool"], sweep=not options["no_sweep"])
        elif options["no_mirror"]:
            kwargs.update(mirror=False)
        self.stdout.write(f"Starting the {executor.name} workflow worker", ending="\n")
        self.stdout.flush()
        executor.worker(concurrency=options["concurrency"], **kwargs).run()
