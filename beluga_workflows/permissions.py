"""Who may do what with workflow runs: one rule shared by the REST API, the admin and the CLI.

Each operation needs one Django model permission on ``WorkflowRun``:

==========  ======================================  ==========================================
operation   permission                              used by
==========  ======================================  ==========================================
view        ``beluga_workflows.view_workflowrun``   list, detail, history, query, approvals
start       ``beluga_workflows.add_workflowrun``    start a run by its public name
signal      ``beluga_workflows.signal_workflowrun`` signals, including Approve / Reject
cancel      ``beluga_workflows.cancel_workflowrun`` cancel a run
==========  ======================================  ==========================================

The REST API wraps this table in :class:`beluga_workflows.api.views.WorkflowPermission`; the
admin and ``manage.py workflow --user`` call :func:`allowed` / :func:`require`. It lives at the
top of the package, beside the models it guards, so a reviewer reads one place to know who can
approve, whichever door they come in by.
"""

from __future__ import annotations

import enum
from typing import Any

from django.core.exceptions import PermissionDenied


class Operation(enum.StrEnum):
    VIEW = "view"
    START = "start"
    SIGNAL = "signal"
    CANCEL = "cancel"

    @property
    def codename(self) -> str:
        return _CODENAMES[self]

    @property
    def permission(self) -> str:
        """The ``app_label.codename`` string ``user.has_perm`` expects."""
        return f"beluga_workflows.{self.codename}"


_CODENAMES = {
    Operation.VIEW: "view_workflowrun",
    Operation.START: "add_workflowrun",
    Operation.SIGNAL: "signal_workflowrun",
    Operation.CANCEL: "cancel_workflowrun",
}


def allowed(user: Any, operation: Operation) -> bool:
    """True if ``user`` (authenticated and active) holds the permission for ``operation``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    # has_perm already answers False for inactive users with the stock backends; be explicit
    # so a custom backend cannot let a deactivated reviewer approve.
    return bool(user.is_active and user.has_perm(operation.permission))


def denial_message(user: Any, operation: Operation) -> str:
    name = user.get_username() if getattr(user, "is_authenticated", False) else "anonymous"
    return (
        f"User {name!r} may not {operation.value} workflow runs: this needs the "
        f"{operation.permission!r} permission."
    )


def require(user: Any, operation: Operation) -> None:
    """Raise Django's ``PermissionDenied`` unless ``user`` may perform ``operation``."""
    if not allowed(user, operation):
        raise PermissionDenied(denial_message(user, operation))


def sender_name(user: Any) -> str:
    """How a user is recorded as the sender of a signal or cancel request (the audit trail)."""
    return str(user.get_username())
