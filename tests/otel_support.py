"""OpenTelemetry for the observability tests: the SDK exporting to files (in a `runworker`
subprocess, see `tests/settings_otel.py`) or to memory (in the test process), and putting the
API's globals back as they were, so the rest of the session runs without a provider.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

#: Set in a worker's environment: the directory its spans and metrics are written to.
OTEL_DIR_ENV = "BELUGA_TEST_OTEL_DIR"
#: Set in a worker's environment: its BELUGA_WORKFLOWS["HOOKS"], comma-separated.
HOOKS_ENV = "BELUGA_TEST_HOOKS"
SPANS = "spans.jsonl"
METRICS = "metrics.jsonl"


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as the tests read it: ids in hex, attributes, status, links, events."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "links": [[f"{x.context.trace_id:032x}", f"{x.context.span_id:016x}"] for x in span.links],
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "pid": os.getpid(),
    }


def metrics_dict(data: MetricsData | None) -> dict[str, list[dict[str, Any]]]:
    """``{metric name: [{"attributes", "value" | "count" and "sum"}]}``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = out.setdefault(metric.name, [])
                for point in metric.data.data_points:
                    entry: dict[str, Any] = {"attributes": dict(point.attributes or {})}
                    if hasattr(point, "value"):
                        entry["value"] = point.value
                    else:
                        entry["count"], entry["sum"] = point.count, point.sum
                    points.append(entry)
    return out


class FileSpanExporter(SpanExporter):
    """One JSON line per span, appended (one write per batch: processes do not interleave)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_dict(span)) + "\n" for span in spans)
        with open(self.path, "a") as handle:
            handle.write(lines)
        return SpanExportResult.SUCCESS


class FileMetricExporter(MetricExporter):
    """One JSON line per export of every metric (cumulative: the last line has the totals)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(metrics_dict(metrics_data)) + "\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def install_files(directory: str | Path) -> None:
    """The global providers of this process export to ``directory`` (a worker's settings)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(directory / SPANS)))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(
        FileMetricExporter(directory / METRICS), export_interval_millis=200
    )
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def read_spans(directory: Path) -> list[dict[str, Any]]:
    try:
        text = (directory / SPANS).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_metrics(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The last export's metrics."""
    try:
        lines = (directory / METRICS).read_text().splitlines()
    except FileNotFoundError:
        return {}
    complete = [line for line in lines if line.endswith("}")]
    return json.loads(complete[-1]) if complete else {}


def total(found: dict[str, list[dict[str, Any]]], name: str, **attributes: Any) -> float:
    """The sum of a counter's points (a histogram's counts) whose attributes include these."""
    points = [
        point
        for point in found.get(name, [])
        if all(point["attributes"].get(k) == v for k, v in attributes.items())
    ]
    return sum(point.get("value", point.get("count", 0)) for point in points)


def reset_globals() -> None:
    """Forget the global providers, as if none had been set (the API sets them once per
    process; its own test utilities reset them the same way), and tell beluga_workflows."""
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    from beluga_workflows import observability

    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    observability.reset()


@contextlib.contextmanager
def in_memory() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """Global providers for this process, recording in memory, for the ``with`` block."""
    from beluga_workflows import observability

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    observability.reset()
    try:
        yield spans, reader
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        reset_globals()
