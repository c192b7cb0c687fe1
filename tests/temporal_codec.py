"""A payload codec for tests/test_temporal_visibility.py: XOR "encryption", enough to prove
that Temporal stores only encoded payloads while beluga reads decoded values. Used by the
test's settings and by its worker (`tests.settings_codec`)."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/beluga-test-xor"
KEY = 0x5A


def _xor(data: bytes) -> bytes:
    return bytes(byte ^ KEY for byte in data)


class XorCodec(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(metadata={"encoding": ENCODING}, data=_xor(p.SerializeToString()))
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # not ours (a search attribute, a header): as it is
                continue
            plain = Payload()
            plain.ParseFromString(_xor(payload.data))
            decoded.append(plain)
        return decoded


codec = XorCodec()
