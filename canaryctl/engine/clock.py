"""Timestamps as the status stores them (RFC 3339, UTC, second precision like Kubernetes)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def seconds_since(text: str | None, now: datetime) -> float | None:
    """Seconds from a stored timestamp to now, None when never set."""
    return None if text is None else (now - from_rfc3339(text)).total_seconds()
