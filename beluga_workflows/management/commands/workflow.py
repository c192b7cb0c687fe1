"""``manage.py workflow``: start, signal, query, cancel and inspect runs from a shell; list
the live workers and prune old runs.

Every action goes through ``get_executor()``, like the REST API and the admin. With
``--user NAME`` the command acts as that user: the same permission rules as the API apply
(:mod:`beluga_workflows.permissions`) and signals record the user as sender. Without it the
shell is trusted (whoever can run ``manage.py`` can read the database anyway) and signals record
``cli:<os user>``. ``prune`` takes no ``--user``: deleting history is maintenance, like
``migrate``, for whoever runs ``manage.py``.

Durations are ``<int><s|m|h|d>`` (``90s``, ``30d``) everywhere (:func:`parse_duration`);
``--timeout`` and ``--wait`` also take a plain number of seconds, as they always did.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import heartbeats, history_pages, previews, registry, retention, timeline
from ...errors import (
    InvalidPayloadError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowError,
    WorkflowNameError,
    WorkflowNotFoundError,
    WorkflowNotHeldError,
)
from ...executors import get_executor
from ...models import WorkflowRun
from ...options import MAX_DURATION, Signal, Status, WorkflowOptions
from ...permissions import Operation, allowed, require, sender_name
from ...state import WorkflowState
from ..history_output import write_history

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_FORBIDDEN = 5

EPILOG = """\
exit codes:
  0  success
  1  the operation failed: a run that ended failed/canceled/timed out (start --wait),
     a query with no handler or whose handler raised, any other error
  2  usage: bad arguments, invalid JSON, unknown workflow name, unknown --user,
     a bad duration (<int><s|m|h|d>, e.g. 30d) or --status
  3  not found: no run with this workflow id
  4  conflict: the id is already running (start), the run has finished (signal, cancel),
     or it is not held for a fix (retry)
  5  permission denied (--user lacks the permission)

examples:
  manage.py workflow start research --id research-q4 --input '"Q4 revenue analysis"'
  manage.py workflow list --approvals
  manage.py workflow signal research-q4 approval true --user alice
  manage.py workflow describe research-q4 --json
  manage.py workflow workers
  manage.py workflow prune --older-than 30d --status completed,canceled --dry-run
"""

OPERATIONS = {
    "start": Operation.START,
    "signal": Operation.SIGNAL,
    "cancel": Operation.CANCEL,
    "retry": Operation.SIGNAL,  # like a signal, it only makes the run take its step again
}


DURATION = re.compile(r"([0-9]+)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> timedelta:
    """``<int><s|m|h|d>`` (``90s``, ``30d``); a ValueError naming ``option`` and the value."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"{option} {text!r} is not a duration: use <int><s|m|h|d>, e.g. 90s, 15m, 2h or 30d."
        )
    seconds = int(match[1]) * UNITS[match[2]]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{option} {text!r} is too long: at most 100 years (36500d).")
    return timedelta(seconds=seconds)


def parse_seconds(text: str, option: str) -> float:
    """A number of seconds (as these options always took) or a duration (``2d``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text, option).total_seconds()
    except ValueError as exc:
        raise ValueError(f"{exc} A plain number of seconds works too.") from None


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{what} is not valid JSON ({exc}); strings need quotes, e.g. '\"text\"'.",
            returncode=EXIT_USAGE,
        ) from exc


class Command(BaseCommand):
    help = (
        "Start, signal, query, cancel, describe, list and show the history of workflow runs, "
        "through the configured executor. Inputs and payloads are JSON; --json prints JSON."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(
            prog_name,
            subcommand,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--json", action="store_true", help="Print JSON for scripts.")
        common.add_argument(
            "--user",
            metavar="USERNAME",
            help="Act as this user: check their permissions and record them as sender.",
        )
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def add(name: str, help: str) -> CommandParser:
            return sub.add_parser(  # type: ignore[no-any-return]
                name,
                help=help,
                description=help,
                parents=[common],
                epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )

        start = add("start", "Start a run of a registered workflow (by its public name).")
        start.add_argument("workflow", help="Public name, e.g. research (see `names`).")
        start.add_argument("--id", dest="workflow_id", help="Workflow id (default: a UUID).")
        start.add_argument("--input", default="null", help="JSON input (default null).")
        start.add_argument(
            "--timeout",
            metavar="DURATION",
            help="How long the whole run may take: seconds, or e.g. 90s, 2h, 2d.",
        )
        start.add_argument(
            "--wait",
            nargs="?",
            const="forever",
            metavar="DURATION",
            help="Wait for the run to finish (at most DURATION: seconds, or e.g. 90s, 5m) "
            "and print its outcome.",
        )

        signal = add("signal", "Send a signal to the running run of an id.")
        signal.add_argument("id", help="Workflow id.")
        signal.add_argument("name", help="Signal name, e.g. approval.")
        signal.add_argument("payload", nargs="?", default="null", help="JSON payload, e.g. true.")

        query = add("query", "Ask a run a query: status, result, history or a custom one.")
        query.add_argument("id", help="Workflow id.")
        query.add_argument("query_type", help="Query type.")

        for name, text in [
            ("cancel", "Cancel the running run of an id."),
            (
                "retry",
                "Run the code of a run held for a fix again now (ON_WORKFLOW_ERROR = 'hold').",
            ),
            ("describe", "Show a run: status, input, result or error, what it waits for."),
            (
                "history",
                "Show a run's whole event history, oldest first, written as it is read "
                "(--json: one JSON list, as testing.replay reads it).",
            ),
        ]:
            add(name, text).add_argument("id", help="Workflow id.")

        runs = add("list", "List runs, newest first.")
        runs.add_argument("--status", choices=[s.value for s in Status])
        runs.add_argument("--workflow", help="Only runs of this workflow name.")
        runs.add_argument(
            "--waiting-for", help="Only running runs blocked on this, e.g. signal:approval."
        )
        runs.add_argument(
            "--approvals", action="store_true", help="Only running runs waiting for any signal."
        )
        runs.add_argument(
            "--held", action="store_true", help="Only running runs held for a fix (see retry)."
        )
        runs.add_argument(
            "--parent", help="Only the child workflows of the run(s) with this workflow id."
        )
        runs.add_argument("--limit", type=int, default=50, help="At most this many (default 50).")

        add("names", "List the workflow names that can be started.")

        add(
            "workers",
            "List the runworker processes that announced themselves (heartbeats), live ones first.",
        )

        closed = ",".join(status.value for status in retention.CLOSED)
        prune = sub.add_parser(
            "prune",
            help="Delete closed runs older than a duration, with their history, in batches.",
            description="Delete closed runs (never running ones) closed longer ago than "
            "--older-than, with their events, activity attempts and timers, a batch per "
            "transaction. On the Temporal executor this deletes beluga's mirror rows only: "
            "Temporal's own histories follow its namespace retention.",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        prune.add_argument(
            "--older-than",
            metavar="DURATION",
            help="Closed longer ago than this: <int><s|m|h|d>, e.g. 30d (default: the "
            "RETENTION setting, when set).",
        )
        prune.add_argument(
            "--status",
            metavar="STATUSES",
            help=f"Only runs with these statuses, comma-separated (default: all of {closed}).",
        )
        prune.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        prune.add_argument(
            "--batch-size",
            type=int,
            default=retention.BATCH,
            metavar="N",
            help=f"Runs deleted per transaction (default {retention.BATCH}).",
        )
        prune.add_argument("--json", action="store_true", help="Print JSON for scripts.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        self.as_json = options["json"]
        user = self._user(options.get("user"))
        # As in the REST API: a user without `view` learns only a run's id, run id and status,
        # and cannot tell a finished run from an unknown id.
        self.may_view = user is None or allowed(user, Operation.VIEW)
        try:
            if user is not None:
                require(user, OPERATIONS.get(action, Operation.VIEW))
            self.sender = sender_name(user) if user is not None else _shell_sender()
            getattr(self, f"do_{action}")(options)
        except PermissionDenied as exc:
            raise CommandError(str(exc), returncode=EXIT_FORBIDDEN) from exc
        except WorkflowClosedError as exc:
            if not self.may_view:
                raise CommandError(
                    str(WorkflowNotFoundError(exc.workflow_id)), returncode=EXIT_NOT_FOUND
                ) from exc
            raise CommandError(str(exc), returncode=EXIT_CONFLICT) from exc
        except WorkflowNotFoundError as exc:
            raise CommandError(str(exc), returncode=EXIT_NOT_FOUND) from exc
        except (WorkflowAlreadyStartedError, WorkflowNotHeldError) as exc:
            raise CommandError(str(exc), returncode=EXIT_CONFLICT) from exc
        except (WorkflowNameError, InvalidPayloadError, ValueError, TypeError) as exc:
            raise CommandError(str(exc), returncode=EXIT_USAGE) from exc
        except WorkflowError as exc:
            raise CommandError(str(exc), returncode=EXIT_ERROR) from exc

    def _user(self, username: str | None) -> Any:
        if username is None:
            return None
        User = get_user_model()
        try:
            return User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.", returncode=EXIT_USAGE) from None

    # Actions.

    def do_start(self, options: dict[str, Any]) -> None:
        registry.resolve_public(options["workflow"])  # a public name, never an import path
        workflow_input = parse_json(options["input"], "--input")
        timeout = options["timeout"]
        if timeout is not None:
            timeout = parse_seconds(timeout, "--timeout")
        wait = None  # `--wait` alone: no limit
        if options["wait"] not in (None, "forever"):
            wait = parse_seconds(options["wait"], "--wait")
            wait = None if wait < 0 else wait  # as before: a negative wait has no limit
        executor = get_executor()
        handle = executor.start(
            options["workflow"],
            WorkflowOptions(
                id=options["workflow_id"] or None, input=workflow_input, timeout=timeout
            ),
        )
        if options["wait"] is None:
            self._state(executor.describe(handle.id))
            return
        try:
            handle.result(timeout=wait)
        except WorkflowError as exc:
            self._state(executor.describe(handle.id))
            raise CommandError(str(exc), returncode=EXIT_ERROR) from exc
        self._state(executor.describe(handle.id))

    def do_signal(self, options: dict[str, Any]) -> None:
        payload = parse_json(options["payload"], "The payload")
        executor = get_executor()
        executor.signal(options["id"], Signal(options["name"], payload, sender=self.sender))
        if self.as_json:
            self._state(executor.describe(options["id"]))
        else:
            self.stdout.write(
                f"Sent signal {options['name']!r} = {json.dumps(payload)} to {options['id']!r} "
                f"as {self.sender}."
            )

    def do_cancel(self, options: dict[str, Any]) -> None:
        executor = get_executor()
        executor.cancel(options["id"], sender=self.sender)
        if self.as_json:
            self._state(executor.describe(options["id"]))
        else:
            self.stdout.write(f"Asked {options['id']!r} to cancel (as {self.sender}).")

    def do_retry(self, options: dict[str, Any]) -> None:
        executor = get_executor()
        executor.retry(options["id"])
        if self.as_json:
            self._state(executor.describe(options["id"]))
        else:
            self.stdout.write(
                f"Asked {options['id']!r} to run its code again; it stays held until a "
                "worker's code gets through."
            )

    def do_query(self, options: dict[str, Any]) -> None:
        result = get_executor().query(options["id"], options["query_type"])
        if self.as_json:
            self._json({"result": result})
        else:
            self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False, default=str))

    def do_describe(self, options: dict[str, Any]) -> None:
        self._state(get_executor().describe(options["id"]))

    def do_history(self, options: dict[str, Any]) -> None:
        write_history(self.stdout, history_pages.stream(options["id"]), self.as_json)

    def do_list(self, options: dict[str, Any]) -> None:
        runs = WorkflowRun.objects.select_related("parent", "continued_from").order_by(
            "-created_at", "-id"
        )
        if options["status"]:
            runs = runs.filter(status=options["status"])
        if options["workflow"]:
            runs = runs.filter(workflow_name=options["workflow"])
        if options["waiting_for"]:
            runs = runs.filter(status=Status.RUNNING.value, waiting_for=options["waiting_for"])
        if options["approvals"]:
            runs = runs.filter(status=Status.RUNNING.value, waiting_for__startswith="signal:")
        if options["parent"]:
            runs = runs.filter(parent__workflow_id=options["parent"])
        if options["held"]:
            runs = runs.filter(status=Status.RUNNING.value, held__isnull=False)
        if options["limit"] < 1:
            raise ValueError("--limit must be at least 1.")
        # Inputs, results and errors as previews: a list never loads them whole.
        states = previews.summaries(list(previews.with_previews(runs)[: options["limit"]]))
        if self.as_json:
            self._json([state.to_json() for state in states])
            return
        header = f"{'ID':<36} {'WORKFLOW':<20} {'STATUS':<16} {'WAITING FOR':<24} CREATED"
        self.stdout.write(header)
        for s in states:
            created = f"{s.created_at:%Y-%m-%d %H:%M:%S}" if s.created_at else ""
            status = f"{s.status.value} (held)" if s.held else s.status.value
            self.stdout.write(
                f"{s.workflow_id:<36} {s.workflow:<20} {status:<16} "
                f"{s.waiting_for or '-':<24} {created}"
            )

    def do_names(self, options: dict[str, Any]) -> None:
        names = registry.public_names()
        if self.as_json:
            self._json(names)
        else:
            self.stdout.write("\n".join(names) if names else "No workflow has a public name.")

    def do_workers(self, options: dict[str, Any]) -> None:
        found = heartbeats.workers(fresh=True)
        if self.as_json:
            self._json([w.to_json() for w in found])
            return
        if not found:
            self.stdout.write("No worker has announced itself: start one with manage.py runworker.")
            return
        self.stdout.write(
            f"{'HOST':<24} {'PID':>7} {'EXECUTOR':<9} {'QUEUES':<36} {'CONC':>4} "
            f"{'POOL':<8} {'LAST BEAT':<16} STATE"
        )
        for w in found:
            ago = timeline.format_duration(w.age) + " ago"
            self.stdout.write(
                f"{w.host:<24} {w.pid:>7} {w.executor:<9} {','.join(w.queues):<36} "
                f"{w.concurrency:>4} {w.pool:<8} {ago:<16} {'live' if w.live else 'NOT LIVE'}"
            )

    def do_prune(self, options: dict[str, Any]) -> None:
        from django.utils import timezone

        from ...conf import retention as retention_setting

        if options["older_than"] is not None:
            older_than = parse_duration(options["older_than"], "--older-than")
        else:
            period = retention_setting()
            if period is None:
                raise ValueError(
                    "--older-than is required (e.g. --older-than 30d): the RETENTION setting "
                    "is not set."
                )
            older_than = period
        if options["batch_size"] < 1:
            raise ValueError("--batch-size must be at least 1.")
        only = retention.statuses(options["status"].split(",") if options["status"] else ())
        cutoff = timezone.now() - older_than
        dry_run = options["dry_run"]
        if dry_run:
            done = retention.count(cutoff, only)
        else:
            done = retention.prune(cutoff, only, options["batch_size"])
        executor = get_executor().name
        mirror_only = executor == "temporal"
        if self.as_json:
            self._json(
                {
                    "dry_run": dry_run,
                    "cutoff": cutoff.isoformat(),
                    "statuses": [s.value for s in only],
                    "executor": executor,
                    "mirror_only": mirror_only,
                    **done.to_json(),
                }
            )
            return
        verb = "Would delete" if dry_run else "Deleted"
        batches = "" if dry_run else f", in {_count(done.batches, 'batch', 'batches')}"
        self.stdout.write(
            f"{verb} {_count(done.runs, 'run')} closed before {cutoff:%Y-%m-%d %H:%M:%S %Z} "
            f"({', '.join(s.value for s in only)}), with {_count(done.events, 'event')}, "
            f"{_count(done.activity_tasks, 'activity attempt')} and "
            f"{_count(done.timers, 'timer')}{batches}."
        )
        if dry_run:
            self.stdout.write("Dry run: nothing was deleted.")
        if mirror_only:
            self.stdout.write(
                "Temporal executor: these are beluga's mirror rows (what the admin, REST API "
                "and CLI list); Temporal keeps its own histories for the namespace's retention "
                "period."
            )

    # Output.

    def _json(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str))

    def _state(self, state: WorkflowState) -> None:
        data = state.to_json()
        if not self.may_view:
            data = {key: data[key] for key in ("id", "run_id", "status")}
            if self.as_json:
                self._json(data)
            else:
                for key, value in data.items():
                    self.stdout.write(f"{key + ':':<18}{value}")
            return
        if self.as_json:
            self._json(data)
            return
        for key in (
            "id",
            "run_id",
            "workflow",
            "status",
            "waiting_for",
            "waiting_since",
            "waiting_deadline",
            "created_at",
            "updated_at",
        ):
            if data[key] not in (None, ""):
                self.stdout.write(f"{key + ':':<18}{data[key]}")
        for key in ("parent_id", "continued_from", "continued_as"):
            if data[key]:
                self.stdout.write(f"{key + ':':<18}{data[key]}")
        if data["no_worker"]:
            self.stdout.write(
                f"{'no_worker:':<18}true (no live worker serves what it waits on; see "
                "`manage.py workflow workers`)"
            )
        for key in ("input", "result", "error"):
            if key == "input" or data[key] is not None:
                self.stdout.write(f"{key + ':':<18}{json.dumps(data[key], ensure_ascii=False)}")
        held = data["held"]
        if held:
            error = held.get("error") or {}
            self.stdout.write(
                f"{'held:':<18}since {held.get('since')}, {held.get('attempts')} failed "
                f"attempt(s): {error.get('type')}: {error.get('message')} "
                f"(fix the code, then `manage.py workflow retry {state.workflow_id}`)"
            )
            self.stdout.write(str(held.get("traceback") or ""))
        for child in state.children:
            self.stdout.write(
                f"{'child:':<18}{child['id']} ({child.get('workflow', '')}, "
                f"{child.get('status') or 'starting'})"
            )


def _count(number: int, singular: str, plural: str = "") -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _shell_sender() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers
        return "cli"
