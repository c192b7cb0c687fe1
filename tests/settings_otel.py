"""Settings of a `runworker` in tests/test_observability.py: the demo settings, the
OpenTelemetry SDK exporting spans and metrics to files in `BELUGA_TEST_OTEL_DIR`, and the
hooks `BELUGA_TEST_HOOKS` names (comma-separated). Test wiring lives here, not in the package.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import BELUGA_WORKFLOWS
from tests import otel_support

otel_support.install_files(os.environ[otel_support.OTEL_DIR_ENV])

if os.environ.get(otel_support.HOOKS_ENV):
    BELUGA_WORKFLOWS = {
        **BELUGA_WORKFLOWS,
        "HOOKS": os.environ[otel_support.HOOKS_ENV].split(","),
    }
