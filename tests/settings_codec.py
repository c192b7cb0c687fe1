"""Settings of a `runworker` in tests/test_temporal_visibility.py: the demo settings with
the test payload codec (`tests.temporal_codec`), as the test process has them, and
`MIRROR_PAYLOADS` off when `BELUGA_TEST_MIRROR_PAYLOADS=0`."""

import os

from project.settings import *  # noqa: F403
from project.settings import BELUGA_WORKFLOWS

BELUGA_WORKFLOWS = {
    **BELUGA_WORKFLOWS,
    "TEMPORAL": {
        **BELUGA_WORKFLOWS["TEMPORAL"],
        "PAYLOAD_CODEC": "tests.temporal_codec.codec",
        "MIRROR_PAYLOADS": os.environ.get("BELUGA_TEST_MIRROR_PAYLOADS") != "0",
    },
}
