"""Go-style durations ("1m30s", "500ms"), the form Flagger manifests use for every interval.

A metric's ``interval`` may also be a Graphite-style window (``1min``, ``30sec``), as Flagger's
Graphite docs write it and its CRD (``^[0-9]+(m|s)``) lets through.
"""

from __future__ import annotations

import argparse
import functools
import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


@functools.lru_cache(maxsize=1024)
def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; a bare number counts as seconds. Cached: each tick reads its
    Canary's intervals several times."""
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"invalid duration {text!r}: expected a Go duration such as 30s, 1m or 1m30s")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(value))


_GRAPHITE_UNITS = {
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
}
METRIC_INTERVAL_PATTERN = (
    r"^(?:(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+"
    r"|[0-9]+(?:" + "|".join(sorted(_GRAPHITE_UNITS, key=len, reverse=True)) + r"))$"
)


def metric_interval_seconds(text: str) -> float:
    """Seconds in a metric interval: a Go duration or a Graphite-style window such as ``1min``."""
    found = re.fullmatch(r"([0-9]+)([a-z]+)", text.strip())
    if found is not None and found.group(2) in _GRAPHITE_UNITS:
        return int(found.group(1)) * _GRAPHITE_UNITS[found.group(2)]
    if not re.fullmatch(METRIC_INTERVAL_PATTERN, text):
        raise ValueError(
            f"invalid interval {text!r}: expected a Go duration such as 30s or 1m, or a Graphite window "
            "such as 1min"
        )
    return parse_duration(text)


def format_duration(seconds: float) -> str:
    """The shortest Go duration string for a whole number of seconds (used in messages)."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    rest = f"{minutes}m" if minutes else ""
    return f"{hours}h{rest}{secs}s" if secs else f"{hours}h{rest}"


def duration_arg(text: str) -> float:
    """An argparse type for every flag that takes a time: a positive duration such as ``90s`` or ``30m``
    (a bare number is seconds), in seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive")
    return seconds
