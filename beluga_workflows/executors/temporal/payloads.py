"""The data converter: how beluga's values are written into Temporal and read back.

``BELUGA_WORKFLOWS["TEMPORAL"]["DATA_CONVERTER"]`` (a ``temporalio.converter.DataConverter``,
or a dotted path to one) and ``["PAYLOAD_CODEC"]`` (a ``temporalio.converter.PayloadCodec``,
or a dotted path to one — encryption, compression) make the converter every client and
worker of the executor connects with: Temporal then stores encoded payloads only, and only
processes holding the codec can read them.

The SDK decodes what it hands to workflow code, activities and ``handle.result()``. The
history we read back ourselves — the mirror, ``describe``, ``history`` — is raw: its
payloads are decoded here with the codec (:func:`decode_events`), before the translation,
which then only converts them with the payload converter. Search attribute values are never
encoded (Temporal indexes them), nor are headers (the SDK's default), so neither is decoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter, PayloadCodec

#: Message fields whose payloads no codec encodes: indexed values, and headers.
_PLAIN_FIELDS = frozenset({"search_attributes", "header"})


def load(value: Any, kind: type, setting: str) -> Any:
    """``value`` itself if it is a ``kind``, else the object its dotted path names (a
    ``kind`` or a no-argument callable returning one); ``TypeError``/``ImportError`` says
    what is wrong, naming ``setting``."""
    if value is None or isinstance(value, kind):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{setting} must be a {kind.__name__} or a dotted path to one, not {value!r}."
        )
    from django.utils.module_loading import import_string

    try:
        found = import_string(value.replace(":", "."))
    except ImportError as exc:
        raise ImportError(f"{setting} {value!r} cannot be imported: {exc}") from exc
    if not isinstance(found, kind) and callable(found):
        found = found()
    if not isinstance(found, kind):
        raise TypeError(f"{setting} {value!r} is {found!r}, not a {kind.__name__}.")
    return found


def data_converter(converter: Any = None, codec: Any = None) -> DataConverter:
    """The converter the settings (or ``Config.extra``) describe; the SDK's default if none."""
    base: DataConverter = load(
        converter, DataConverter, "BELUGA_WORKFLOWS['TEMPORAL']['DATA_CONVERTER']"
    )
    payload_codec = load(codec, PayloadCodec, "BELUGA_WORKFLOWS['TEMPORAL']['PAYLOAD_CODEC']")
    base = base or DataConverter.default
    if payload_codec is not None:
        base = dataclasses.replace(base, payload_codec=payload_codec)
    return base


def _collect(message: Message, found: list[Payload]) -> None:
    for field, value in message.ListFields():
        if field.name in _PLAIN_FIELDS or field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for entry in value.values():
                if isinstance(entry, Message):
                    _add(entry, found)
        elif field.is_repeated:
            for item in value:
                _add(item, found)
        else:
            _add(value, found)


def _add(value: Message, found: list[Payload]) -> None:
    if isinstance(value, Payload):
        found.append(value)
    elif isinstance(value, Payloads):
        found.extend(value.payloads)
    else:
        _collect(value, found)


async def decode_events(events: Iterable[Message], converter: DataConverter) -> None:
    """Decode, in place, every payload of these history events with the converter's codec
    (nothing to do without one)."""
    codec = converter.payload_codec
    if codec is None:
        return
    payloads: list[Payload] = []
    for event in events:
        _collect(event, payloads)
    if not payloads:
        return
    decoded = await codec.decode(payloads)
    for payload, plain in zip(payloads, decoded, strict=True):
        payload.CopyFrom(plain)
