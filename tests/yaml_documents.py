"""YAML streams the suite reads in bulk (rendered charts, vendored CRDs), parsed by libyaml where PyYAML
has it: they run to megabytes, which the pure-Python loader takes seconds over. Both loaders build the
same objects (the safe constructor); only the parser differs."""

from __future__ import annotations

from typing import Any

import yaml

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def documents(text: str) -> list[Any]:
    """The stream's documents, empty ones left out."""
    return [doc for doc in yaml.load_all(text, Loader=SAFE_LOADER) if doc]
