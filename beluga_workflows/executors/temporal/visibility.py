"""Beluga's custom search attribute: what a run waits for, in Temporal's visibility.

A run's status is Temporal's own ``ExecutionStatus`` — the authority, which also knows the
runs Temporal closed without a word from the workflow (a timeout, a terminate). What
Temporal cannot know is what a running run is blocked on, so the workflow publishes it as
the Keyword search attribute :data:`WAITING_FOR` (``signal:approval``, ``activity:report``
alongside a signal, …; unset when it waits on no signal). Lists then come from visibility::

    temporal workflow list --query \
        "ExecutionStatus = 'Running' AND BelugaWaitingFor = 'signal:approval'"

A namespace must declare the attribute before a run may set it (Temporal fails the
workflow task of a run that sets an unknown one): ``runworker`` creates it when missing
(:func:`ensure`), or an operator does (:data:`CREATE_HINT`). Whether a run publishes it is
decided once, when it starts: the executor gives the run the attribute (empty) in its start
request when the namespace declares it, and the workflow publishes only if its start event
carries it — a decision written in the run's history, so replay sees the same one on any
worker, and runs started before the attribute existed (or with the Temporal CLI) keep to
the memo alone.

Nothing here imports Django: the workflow uses the key inside the sandbox.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

logger = logging.getLogger("beluga_workflows")

#: What a running run is blocked on, as the built-in engine labels it (``signal:approval``).
WAITING_FOR = SearchAttributeKey.for_keyword("BelugaWaitingFor")

#: The command that declares the attribute, for operators (and the error that needs it).
CREATE_HINT = (
    "temporal operator search-attribute create --namespace {namespace} "
    f"--name {WAITING_FOR.name} --type Keyword"
)

#: Seconds before a namespace found without the attribute is asked again.
RECHECK = 60.0

_known: dict[tuple[str, str], tuple[bool, float]] = {}


def at_start() -> TypedSearchAttributes:
    """The search attributes a run starts with: the attribute, empty (nothing awaited yet)."""
    return TypedSearchAttributes([SearchAttributePair(WAITING_FOR, "")])


def published(search_attributes: TypedSearchAttributes) -> bool:
    """Whether a run whose start event has these attributes publishes what it waits for."""
    return search_attributes.get(WAITING_FOR) is not None


async def declared(client: Any, create: bool = False) -> bool:
    """Whether the client's namespace declares the attribute (asked once a minute at most).

    With ``create`` (the worker), a missing attribute is created; a server that refuses
    (no permission: Temporal Cloud declares attributes in its own console) is logged once with
    the command an operator runs. Runs then keep to the memo until it exists.
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )
    from temporalio.service import RPCError

    key = (client.service_client.config.target_host, client.namespace)
    known = _known.get(key)
    if known is not None and (known[0] or time.monotonic() < known[1]):
        return known[0]
    namespace = client.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        found = WAITING_FOR.name in listed.custom_attributes
        if not found and create:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        WAITING_FOR.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                    },
                )
            )
            logger.info("Created search attribute %s in %r", WAITING_FOR.name, namespace)
        elif not found and known is None:
            logger.warning(
                "Temporal namespace %r lacks search attribute %s; runs publish what they "
                "wait for in their memo only until it exists (runworker creates it, or: %s)",
                namespace,
                WAITING_FOR.name,
                CREATE_HINT.format(namespace=namespace),
            )
    except RPCError as exc:
        if known is None:
            logger.warning(
                "Temporal namespace %r lacks search attribute %s and it could not be %s (%s); "
                "runs publish what they wait for in their memo only. To declare it: %s",
                namespace,
                WAITING_FOR.name,
                "created" if create else "listed",
                exc.message,
                CREATE_HINT.format(namespace=namespace),
            )
        found = False
    # A new attribute reaches every Temporal service within moments; until it is listed as
    # declared, runs start without it.
    _known[key] = (found, time.monotonic() + RECHECK)
    return found


def forget() -> None:
    """Ask the namespaces again (tests)."""
    _known.clear()
