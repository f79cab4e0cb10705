"""Log setup for the long-running commands: text or JSON lines, each with the canary it is about.

Every record gets the fields of the reconcile it was written in (``canary``, ``namespace``, ``phase``,
``step``, set by ``log_context``) and the OpenTelemetry ``trace_id``/``span_id`` of the span current
when it was written, so a log line leads to its rollout's trace. kopf's own per-object records carry
the object's name and namespace too. JSON lines come from python-json-logger.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONTEXT_FIELDS = ("canary", "namespace", "phase", "step")
TRACE_FIELDS = ("trace_id", "span_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# kopf's record extras, not fields of ours: the object they name is in canary/namespace already.
KOPF_EXTRAS = ("k8s_ref", "k8s_skip", "settings")

LogValue = str | int | None
_context: ContextVar[Mapping[str, LogValue] | None] = ContextVar("canaryctl_log_context", default=None)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@contextmanager
def log_context(**fields: LogValue) -> Iterator[None]:
    """Within the block, every record written in this task carries ``fields`` (None leaves one unset)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the reconcile's fields and the current span's ids to every record passing a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = dict(_context.get() or {})
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers
        if isinstance(ref, Mapping):
            fields.setdefault("canary", ref.get("name"))
            fields.setdefault("namespace", ref.get("namespace"))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = trace.format_trace_id(span.trace_id)
            fields["span_id"] = trace.format_span_id(span.span_id)
        for key in (*CONTEXT_FIELDS, *TRACE_FIELDS):
            if fields.get(key) is not None and not hasattr(record, key):
                setattr(record, key, fields[key])
        return True


class TextFormatter(logging.Formatter):
    """The classic line, then the record's context as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        keys = (*CONTEXT_FIELDS, *TRACE_FIELDS)
        pairs = [f"{key}={getattr(record, key)}" for key in keys if hasattr(record, key)]
        return f"{line} {' '.join(pairs)}" if pairs else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, then the context and trace fields."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=[*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, *KOPF_EXTRAS],
        timestamp="time",  # ISO 8601, UTC
    )


def configure_logging(
    level: str = "INFO", log_format: LogFormat | str = LogFormat.TEXT, stream: TextIO | None = None
) -> logging.Handler:
    """Replaces the root logger's handlers with one writing ``log_format`` lines to ``stream``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    json_lines = LogFormat(log_format) is LogFormat.JSON
    handler.setFormatter(json_formatter() if json_lines else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
