"""Errors raised by metric providers; the analyzer turns them into observation errors, never values."""

from __future__ import annotations


class MetricQueryError(Exception):
    """A query could not be answered: transport, auth, HTTP status or an unparseable response."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderConfigError(ValueError):
    """A MetricTemplate provider cannot be built: unknown type, bad address or missing credentials."""


class TemplateRenderError(ValueError):
    """A query template references a variable the canary does not define, or does not parse."""
