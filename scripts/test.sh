#!/usr/bin/env bash
# The pytest part of `make test`, in up to three passes:
#   embedded  on the embedded default (no DATABASE_URL / CELERY_BROKER_URL): PostgreSQL and
#             Redis started from wheels under .data/test (or BELUGA_TEST_DATA_DIR), and stopped
#             again when the script ends, however it ends. Only the `core` tests when `services`
#             runs too, the whole suite when it does not (a fresh machine with no services);
#   services  when PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 answer, the whole
#             suite against them;
#   rabbitmq  then the `broker` tests once more on RabbitMQ (127.0.0.1:5672) if it answers.
# A pass that cannot run says SKIPPED, loudly, and why. BELUGA_TEST_REQUIRE (e.g. "embedded
# services rabbitmq", set by .ci/run from what the machine has) lists passes that must run:
# a required pass that is skipped, or that collects no test, fails the run.
# Extra arguments go to pytest. Exit status: non-zero if a pass failed, a required pass did not
# run, or no pass ran a test.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
# Overridable, e.g. to keep two checkouts' runs apart on one machine.
EXTERNAL_DATABASE_URL=${BELUGA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/beluga}
EXTERNAL_BROKER_URL=${BELUGA_TEST_BROKER_URL:-redis://127.0.0.1:6379/15}
AMQP_BROKER_URL=${BELUGA_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672//}
EMBEDDED_DATA_DIR=${BELUGA_TEST_DATA_DIR:-$PWD/.data/test}
# The executor `make run` remembers in .data/executor is the demo's, not the tests'.
export BELUGA_EXECUTOR=${BELUGA_EXECUTOR:-default}
REQUIRED=" ${BELUGA_TEST_REQUIRE:-} "
SELECTING=$#  # extra pytest arguments may select nothing in a pass

services_reachable() {
    "$PY" - "$EXTERNAL_DATABASE_URL" "$EXTERNAL_BROKER_URL" <<'PYEOF' >/dev/null 2>&1
import sys
import psycopg
import redis
# The maintenance database: pytest-django creates test_<name> from there.
psycopg.connect(sys.argv[1].rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()
assert redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()
PYEOF
}

# Stop the embedded services on every way out: success, a failed pass, Ctrl-C, kill.
stop_embedded_services() {
    "$PY" -m project.embedded stop --data-dir "$EMBEDDED_DATA_DIR" >/dev/null ||
        echo "warning: could not stop the embedded services under $EMBEDDED_DATA_DIR" >&2
}
trap stop_embedded_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

failed=0
ran_tests=0
summary=()
required() { [[ "$REQUIRED" == *" $1 "* ]]; }

record() {  # record <pass> <pytest exit status>
    case "$2" in
        0) ran_tests=1; summary+=("$1: passed") ;;
        5)  # collected nothing
            if required "$1" || [ "$SELECTING" = 0 ]; then
                failed=1; summary+=("$1: FAILED (no test collected)")
            else
                summary+=("$1: no test collected by the selection")
            fi ;;
        *) failed=1; summary+=("$1: FAILED (pytest exit $2)") ;;
    esac
}

skipped() {  # skipped <pass> <reason>
    echo
    echo "!!! SKIPPED the $1 pass: $2"
    echo
    if required "$1"; then
        failed=1; summary+=("$1: FAILED (required but skipped: $2)")
    else
        summary+=("$1: SKIPPED ($2)")
    fi
}

if services_reachable; then
    external=1
    embedded_args=(-m core)
else
    external=0
    embedded_args=()
    echo "PostgreSQL 127.0.0.1:5432 / Redis 127.0.0.1:6379 not reachable:" \
        "running the whole suite on the embedded default only."
fi

echo "=== pytest on the embedded default (BELUGA_DATA_DIR=$EMBEDDED_DATA_DIR) ${embedded_args[*]}"
env -u DATABASE_URL -u CELERY_BROKER_URL BELUGA_DATA_DIR="$EMBEDDED_DATA_DIR" \
    "$PY" -m pytest "${embedded_args[@]}" "$@"
record embedded $?

if [ "$external" = 1 ]; then
    echo "=== pytest on $EXTERNAL_DATABASE_URL and $EXTERNAL_BROKER_URL"
    DATABASE_URL=$EXTERNAL_DATABASE_URL CELERY_BROKER_URL=$EXTERNAL_BROKER_URL \
        "$PY" -m pytest "$@"
    record services $?
    # RabbitMQ redelivers on a lost connection where Redis waits for a visibility timeout:
    # the broker-sensitive tests (kill -9 recovery, duplicate delivery) run on both.
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/5672" 2>/dev/null; then
        echo "=== pytest -m broker on $EXTERNAL_DATABASE_URL and $AMQP_BROKER_URL"
        DATABASE_URL=$EXTERNAL_DATABASE_URL CELERY_BROKER_URL=$AMQP_BROKER_URL \
            "$PY" -m pytest -m broker "$@"
        record rabbitmq $?
    else
        skipped rabbitmq "nothing listens on 127.0.0.1:5672"
    fi
else
    skipped services "PostgreSQL 127.0.0.1:5432 / Redis 127.0.0.1:6379 not reachable"
    skipped rabbitmq "it runs against the services pass's PostgreSQL"
fi

echo
echo "=== test passes"
printf '  %s\n' "${summary[@]}"
if [ "$failed" = 1 ]; then
    echo "FAILED: at least one pytest pass failed or a required pass did not run." >&2
    exit 1
fi
if [ "$ran_tests" = 0 ]; then
    echo "FAILED: no pytest pass collected any test." >&2
    exit 1
fi
exit 0
