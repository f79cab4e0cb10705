"""TrafficPolicy (mesh.canaryctl.dev/v1alpha1): what SMI cannot say about a service's traffic.

SMI TrafficSplit carries the weights and HTTPRouteGroup the matches; this resource adds mirroring,
per-backend fault injection (so only canary traffic is faulted), timeouts, retries, outlier
detection and cookie session affinity for the apex service it names. Backends are named by their Service name.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from canaryctl_mesh.duration import parse_duration


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (canaryctl's conventions)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(ApiModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None


MESH_GROUP: Final = "mesh.canaryctl.dev"
MESH_VERSION: Final = "v1alpha1"
MESH_API_VERSION: Final = "mesh.canaryctl.dev/v1alpha1"
TRAFFIC_POLICY_KIND: Final = "TrafficPolicy"
# An RFC 6265 cookie name (a token).
COOKIE_NAME: Final = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"

Percentage = Annotated[float, Field(ge=0, le=100)]
Duration = Annotated[str, Field(description="Go duration, e.g. 500ms, 2s, 1m")]


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class MirrorPolicy(ApiModel):
    backend: str = Field(min_length=1, description="Service receiving a copy; its responses are dropped")
    percentage: Percentage = 100.0


class FaultDelayPolicy(ApiModel):
    fixed_delay: Duration
    percentage: Percentage

    _fixed = field_validator("fixed_delay")(_duration)


class FaultAbortPolicy(ApiModel):
    http_status: int = Field(ge=200, le=599)
    percentage: Percentage


class BackendFault(ApiModel):
    backend: str = Field(min_length=1, description="Service whose share of the traffic is faulted")
    delay: FaultDelayPolicy | None = None
    abort: FaultAbortPolicy | None = None


class RetryPolicy(ApiModel):
    attempts: int = Field(default=2, ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str = "5xx,reset,connect-failure,refused-stream"
    budget_percent: float = Field(
        default=20.0, gt=0, le=100, description="Max share of active requests retrying"
    )
    min_retry_concurrency: int = Field(default=3, ge=0)

    _per_try = field_validator("per_try_timeout")(_duration)


class OutlierDetectionPolicy(ApiModel):
    # to_camel would say consecutive5Xx; keep Envoy's and Istio's spelling.
    consecutive_5xx: int = Field(default=5, ge=1, alias="consecutive5xx")
    interval: Duration = "10s"
    base_ejection_time: Duration = "30s"
    max_ejection_percent: int = Field(default=50, ge=0, le=100)

    _durations = field_validator("interval", "base_ejection_time")(_duration)


class StickyCookie(ApiModel):
    """Session affinity: requests carrying ``name=value`` in their Cookie header go to ``backend``, and
    the backend's responses outside that route (the weighted split, a header match) carry
    ``setCookie``. Without ``backend`` the cookie is an expired one: requests showing it go through
    the split and their responses carry ``setCookie`` (which deletes it)."""

    name: str = Field(max_length=256, pattern=COOKIE_NAME)
    value: str = Field(max_length=64, pattern=r"^[0-9A-Za-z]+$")
    backend: str | None = Field(default=None, min_length=1)
    set_cookie: str = Field(min_length=1, max_length=2048, pattern=r"^[^\r\n]+$")


class TrafficPolicySpec(ApiModel):
    service: str = Field(min_length=1, description="Apex service, as in TrafficSplit spec.service")
    mirror: MirrorPolicy | None = None
    faults: list[BackendFault] = Field(default_factory=list)
    timeout: Duration | None = None
    retries: RetryPolicy | None = None
    outlier_detection: OutlierDetectionPolicy | None = None
    session_affinity: list[StickyCookie] = Field(default_factory=list)

    _timeout = field_validator("timeout")(_duration)


class TrafficPolicy(ApiModel):
    api_version: Literal["mesh.canaryctl.dev/v1alpha1"] = "mesh.canaryctl.dev/v1alpha1"
    kind: Literal["TrafficPolicy"] = "TrafficPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrafficPolicySpec
