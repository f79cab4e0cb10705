"""Controller telemetry: Prometheus metrics and OpenTelemetry traces."""

from canaryctl.telemetry.metrics import ControllerMetrics, MetricsServer, serve_metrics
from canaryctl.telemetry.tracing import StepSpan, Tracer, processors_from_env

__all__ = ["ControllerMetrics", "MetricsServer", "StepSpan", "Tracer", "processors_from_env", "serve_metrics"]
