"""The beluga_workflows test suite (run with `make test`)."""
