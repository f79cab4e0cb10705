"""The revision a canary is judged by: its pod template plus the checksums of the configs it uses.

Flagger compares the same pair against lastAppliedSpec/lastPromotedSpec; a change to a mounted
ConfigMap or Secret is a new revision even when the template is untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def config_checksum(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def revision_hash(pod_template: Mapping[str, Any], tracked_configs: Mapping[str, str]) -> str:
    document = {"template": pod_template, "configs": dict(sorted(tracked_configs.items()))}
    return config_checksum(document)
