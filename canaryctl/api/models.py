"""The canaryctl.dev/v1beta1 API: Canary, MetricTemplate and AlertProvider.

These pydantic models are the single source of truth: the CRDs in ``crds/`` are generated from them,
``canaryctl lint`` validates with them and the engine reads them. Field names and defaults follow
Flagger's flagger.app/v1beta1 Canary so a Flagger manifest validates after changing only its apiVersion;
canaryctl's additions (steps, fault, compare, onNoData, fastFail) are optional.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from canaryctl import registry
from canaryctl_mesh.api import COOKIE_NAME
from canaryctl_mesh.duration import METRIC_INTERVAL_PATTERN, metric_interval_seconds, parse_duration
from canaryctl_mesh.regex import re2_problem

GROUP: Final = "canaryctl.dev"
VERSION: Final = "v1beta1"
API_VERSION: Final = "canaryctl.dev/v1beta1"  # a literal, so it can default the Literal apiVersion fields
FLAGGER_API_VERSION = "flagger.app/v1beta1"

Weight = Annotated[int, Field(ge=0, le=100)]
Percentage = Annotated[float, Field(ge=0, le=100)]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors so typos surface."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        defer_build=True,  # validators are built on first use: the CLI validates only Canaries
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class OpenModel(ApiModel):
    """Shapes owned by another API (Istio, Gateway API): kept as written, passed through unchanged."""

    model_config = ConfigDict(extra="allow")


# Validation context that accepts provider names this machine has not installed: `kubectl canary status`
# shows a Canary whose router only the cluster has.
UNCHECKED_PLUGINS: Final = {"plugins": "unchecked"}


# Validation context key: the floor of analysis intervals for the Canaries validated with it (the
# operator's setting; Flagger's 10 s when absent).
MIN_INTERVAL_CONTEXT: Final = "min_interval_seconds"


def plugins_checked(info: ValidationInfo) -> bool:
    return not (isinstance(info.context, dict) and info.context.get("plugins") == "unchecked")


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _check_metric_interval(value: str) -> str:
    metric_interval_seconds(value)
    return value


Duration = Annotated[
    str, AfterValidator(_check_duration), Field(description="Go duration, e.g. 30s, 1m, 1m30s")
]
MetricInterval = Annotated[
    str,
    AfterValidator(_check_metric_interval),
    Field(
        description="Go duration (30s, 1m) or Graphite-style window (1min, 30sec)",
        json_schema_extra={"pattern": METRIC_INTERVAL_PATTERN},  # the validator's message is clearer
    ),
]


# ---------------------------------------------------------------------------------------------------
# References and shared shapes
# ---------------------------------------------------------------------------------------------------


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    DAEMON_SET = "DaemonSet"
    SERVICE = "Service"


KNATIVE_SERVING_GROUP: Final = "serving.knative.dev"
KNATIVE_SERVING_API: Final = f"{KNATIVE_SERVING_GROUP}/v1"
# On a Knative Service: the revision the primary side serves. Flagger's name, so a migrated Service
# keeps its primary.
KNATIVE_PRIMARY_REVISION: Final = "flagger.app/primary-revision"


class TargetRef(ApiModel):
    api_version: str | None = None
    kind: TargetKind
    name: str = Field(min_length=1)

    @property
    def knative(self) -> bool:
        """A Knative Service (``serving.knative.dev``): its revisions are the primary and the canary,
        and Knative's own routing splits between them (Flagger's ``knative`` provider)."""
        group = (self.api_version or "").split("/")[0]
        return self.kind is TargetKind.SERVICE and group == KNATIVE_SERVING_GROUP


class CrossNamespaceObjectReference(ApiModel):
    api_version: str | None = None
    kind: str | None = None
    name: str = Field(min_length=1)
    namespace: str | None = None


class LocalObjectReference(ApiModel):
    name: str = Field(min_length=1)


class ScalerReplicas(ApiModel):
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)


class AutoscalerRef(ApiModel):
    api_version: str | None = None
    kind: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    name: str = Field(min_length=1)
    primary_scaler_replicas: ScalerReplicas | None = None
    primary_scaler_queries: dict[str, str] | None = None


def _re2(pattern: str) -> str:
    """Regexes are RE2's, as Istio, Envoy-based gateways and the included mesh read them."""
    problem = re2_problem(pattern)
    if problem is not None:
        raise ValueError(problem)
    return pattern


class StringMatch(ApiModel):
    """Istio StringMatch: exactly one of exact, prefix, regex (suffix for Gateway API paths)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    exact: str | None = None
    prefix: str | None = None
    regex: Annotated[str, Field(min_length=1), AfterValidator(_re2)] | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex", "suffix") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of exact, prefix, regex or suffix must be set")
        return self


class HTTPMatchRequest(ApiModel):
    """Istio HTTPMatchRequest, the shape Flagger uses for A/B matches and service match rules."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    query_params: dict[str, StringMatch] | None = None
    without_headers: dict[str, StringMatch] | None = None
    source_labels: dict[str, str] | None = None
    source_namespace: str | None = None
    gateways: list[str] | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    ignore_uri_case: bool | None = None


MAX_MATCHES: Final = 16
"""Entries of spec.service.match and of analysis.match (Flagger's examples use 1 to 3): routers that AND
them build one route match per pair, so 16 x 16 at most."""


class CustomMetadata(ApiModel):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class HTTPRetry(ApiModel):
    attempts: int = Field(ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str | None = None


class RewriteType(StrEnum):
    """Gateway API's path modifiers; Flagger treats anything but ReplacePrefixMatch as a full path."""

    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


class HTTPRewrite(ApiModel):
    uri: str | None = None
    authority: str | None = None
    type: RewriteType | None = None


# --- Istio's VirtualService route options and DestinationRule traffic policy (as Flagger embeds them)


class HeaderOperations(ApiModel):
    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(ApiModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class CorsPolicy(ApiModel):
    allow_origin: list[str] | None = Field(default=None, description="Deprecated by Istio: use allowOrigins")
    allow_origins: list[StringMatch] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: Duration | None = None
    allow_credentials: bool | None = None


class SimpleLoadBalancer(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_CONN = "LEAST_CONN"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"
    LEAST_REQUEST = "LEAST_REQUEST"


class HTTPCookie(ApiModel):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None


class ConsistentHash(ApiModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    minimum_ring_size: int | None = Field(default=None, ge=0)


class LocalityDistribute(ApiModel):
    from_: str | None = Field(default=None, alias="from")
    to: dict[str, int] | None = None


class LocalityFailover(ApiModel):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLoadBalancer(ApiModel):
    distribute: list[LocalityDistribute] | None = None
    failover: list[LocalityFailover] | None = None
    enabled: bool | None = None


class LoadBalancer(ApiModel):
    simple: SimpleLoadBalancer | None = None
    consistent_hash: ConsistentHash | None = None
    locality_lb_setting: LocalityLoadBalancer | None = None
    warmup_duration_secs: Duration | None = None


class TCPSettings(ApiModel):
    max_connections: int | None = Field(default=None, ge=0)
    connect_timeout: Duration | None = None


class H2UpgradePolicy(StrEnum):
    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


class HTTPSettings(ApiModel):
    h2_upgrade_policy: H2UpgradePolicy | None = None
    http1_max_pending_requests: int | None = Field(default=None, ge=0)
    http2_max_requests: int | None = Field(default=None, ge=0)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: Duration | None = None


class ConnectionPool(ApiModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(ApiModel):
    consecutive_errors: int | None = Field(default=None, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, alias="consecutive5xxErrors")
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    split_external_local_origin_errors: bool | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)


class TLSMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


class ClientTLS(ApiModel):
    mode: TLSMode
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    subject_alt_names: list[str] | None = None
    sni: str | None = None


class PortSelector(ApiModel):
    number: int = Field(ge=1, le=65535)


class PortTrafficPolicy(ApiModel):
    port: PortSelector
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLS | None = None


class TrafficPolicy(ApiModel):
    """Istio's DestinationRule traffic policy, written onto the generated DestinationRules."""

    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLS | None = None
    port_level_settings: list[PortTrafficPolicy] | None = None


# --- Gateway API ---------------------------------------------------------------------------------

_DNS_SUBDOMAIN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ParentReference(ApiModel):
    """Gateway API ParentReference (with its CRD's bounds): the Gateways an HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    group: str | None = Field(default=None, max_length=253, pattern=_DNS_SUBDOMAIN)
    kind: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
    )
    section_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    port: int | None = Field(default=None, ge=1, le=65535)


# ---------------------------------------------------------------------------------------------------
# spec.service
# ---------------------------------------------------------------------------------------------------


class TrafficDistribution(StrEnum):
    """Kubernetes Service ``trafficDistribution``."""

    PREFER_CLOSE = "PreferClose"
    PREFER_SAME_ZONE = "PreferSameZone"
    PREFER_SAME_NODE = "PreferSameNode"


class UnmanagedMetadata(ApiModel):
    """Label and annotation keys of the generated objects that canaryctl leaves to others."""

    annotations: list[str] | None = None
    labels: list[str] | None = None


# Gateway API's HTTPRoute rule on timeouts (v1.6), checked where the Canary is written.
BACKEND_TIMEOUT_RULE: Final = (
    "!(has(self.timeout) && has(self.backendTimeout) && duration(self.timeout) != duration('0s') "
    "&& duration(self.backendTimeout) > duration(self.timeout))"
)


class CanaryService(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": BACKEND_TIMEOUT_RULE, "message": "backendTimeout must not be longer than timeout"}
            ]
        }
    )

    name: str | None = None
    port: int = Field(ge=1, le=65535)
    port_name: str = "http"
    target_port: Annotated[
        int | str | None,
        Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
    ] = None
    app_protocol: str | None = None
    traffic_distribution: TrafficDistribution | None = None
    port_discovery: bool = False
    headless: bool = False
    timeout: Duration | None = None
    backend_timeout: Duration | None = Field(
        default=None, description="Gateway API: the timeout of each request to a backend, each retry its own"
    )
    gateways: list[str] | None = None
    gateway_refs: list[ParentReference] | None = None
    hosts: list[str] | None = None
    delegation: bool | None = None
    traffic_policy: TrafficPolicy | None = None
    match: list[HTTPMatchRequest] | None = Field(default=None, max_length=MAX_MATCHES)
    rewrite: HTTPRewrite | None = None
    retries: HTTPRetry | None = None
    headers: Headers | None = None
    cors_policy: CorsPolicy | None = None
    mesh_name: str | None = None
    backends: list[str] | None = None
    apex: CustomMetadata | None = None
    primary: CustomMetadata | None = None
    canary: CustomMetadata | None = None
    unmanaged_metadata: UnmanagedMetadata | None = None

    @model_validator(mode="after")
    def _backend_within_request(self) -> CanaryService:
        """What Gateway API's HTTPRoute schema refuses: a backend request outliving the whole request."""
        if self.timeout and self.backend_timeout:
            request, backend = parse_duration(self.timeout), parse_duration(self.backend_timeout)
            if request > 0 and backend > request:
                raise ValueError(
                    f"backendTimeout {self.backend_timeout} must not be longer than timeout {self.timeout}"
                )
        return self


# ---------------------------------------------------------------------------------------------------
# spec.analysis
# ---------------------------------------------------------------------------------------------------


class ThresholdRange(ApiModel):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be greater than max ({self.max})")
        return self


class NoDataPolicy(StrEnum):
    HOLD = "hold"
    FAIL = "fail"
    PASS = "pass"


class Better(StrEnum):
    HIGHER = "higher"
    LOWER = "lower"


class MetricComparison(ApiModel):
    """Judge the canary against the primary measured by the same query over the same window."""

    against: Literal["primary"] = "primary"
    max_delta: float | None = Field(default=None, ge=0)
    max_ratio: float | None = Field(default=None, gt=0)
    better: Better | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> MetricComparison:
        if self.max_delta is None and self.max_ratio is None:
            raise ValueError("set maxDelta, maxRatio or both")
        return self


MAX_QUERY_CHARS: Final = 65_536
"""A query's template text (a query renders to at most as many characters)."""


class CanaryMetric(ApiModel):
    name: str = Field(min_length=1)
    interval: MetricInterval | None = None
    threshold: float | None = None
    threshold_range: ThresholdRange | None = None
    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    template_ref: CrossNamespaceObjectReference | None = None
    template_variables: dict[str, str] | None = None
    on_no_data: NoDataPolicy = NoDataPolicy.HOLD
    compare: MetricComparison | None = None


class WebhookType(StrEnum):
    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"
    EVENT = "event"


# A hook holds its Canary's tick for at most (1 + retries) x timeout (plus backoff).
MAX_WEBHOOK_TIMEOUT: Final = "10m"
MAX_WEBHOOK_RETRIES: Final = 10


class CanaryWebhook(ApiModel):
    type: WebhookType = Field(
        default=WebhookType.ROLLOUT,
        json_schema_extra={"enum": ["", *WebhookType]},  # "" is rollout, as in Flagger's CRD
    )
    name: str = Field(min_length=1)
    url: str = Field(min_length=1)
    timeout: Duration | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"duration(self) <= duration('{MAX_WEBHOOK_TIMEOUT}')",
                    "message": f"must be a duration with a unit of at most {MAX_WEBHOOK_TIMEOUT}",
                }
            ]
        },
    )
    metadata: dict[str, str] | None = None
    mute_alert: bool = False
    retries: int | None = Field(default=None, ge=0, le=MAX_WEBHOOK_RETRIES)
    disable_tls: bool = Field(default=False, alias="disableTLS", description="Skip TLS verification")
    secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret in the Canary's namespace whose key 'token' is sent as "
        "'Authorization: Bearer <token>' (e.g. to an authenticating load tester)",
    )

    @field_validator("timeout")
    @classmethod
    def _bounded_timeout(cls, value: str | None) -> str | None:
        """What the CRD's rule says: a Go duration with a unit (``duration()`` refuses a bare number)."""
        if value is None:
            return value
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            raise ValueError(f"timeout {value!r} needs a unit, e.g. {value.strip()}s")
        if parse_duration(value) > parse_duration(MAX_WEBHOOK_TIMEOUT):
            raise ValueError(f"timeout {value} is above the maximum of {MAX_WEBHOOK_TIMEOUT}")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _empty_is_rollout(cls, value: object) -> object:
        return WebhookType.ROLLOUT if value in ("", None) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        return value


class Severity(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class CanaryAlert(ApiModel):
    name: str = Field(min_length=1)
    severity: Severity = Field(
        default=Severity.INFO,
        json_schema_extra={"enum": ["", *Severity]},  # "" is info, as in Flagger's CRD
    )
    provider_ref: CrossNamespaceObjectReference

    @field_validator("severity", mode="before")
    @classmethod
    def _empty_is_info(cls, value: object) -> object:
        return Severity.INFO if value in ("", None) else value


class SameSite(StrEnum):
    STRICT = "Strict"
    LAX = "Lax"
    NONE = "None"


# An attribute value that cannot end the cookie attribute early.
COOKIE_ATTRIBUTE = r"^[^;,\s]+$"
MAX_COOKIE_AGE = 400 * 86400  # browsers cap Max-Age at 400 days (RFC 6265bis)


class SessionAffinity(ApiModel):
    """Flagger's cookie stickiness: a client served by the canary once keeps reaching it."""

    cookie_name: str = Field(min_length=1, max_length=256, pattern=COOKIE_NAME)
    max_age: int = Field(default=86400, ge=1, le=MAX_COOKIE_AGE)
    primary_cookie_name: str | None = Field(default=None, max_length=256, pattern=COOKIE_NAME)
    domain: str | None = Field(default=None, max_length=253, pattern=COOKIE_ATTRIBUTE)
    path: str | None = Field(default=None, max_length=1024, pattern=COOKIE_ATTRIBUTE)
    secure: bool = False
    http_only: bool = False
    same_site: SameSite | None = None
    partitioned: bool = False

    def set_cookie(self, cookie: str, max_age: int) -> str:
        """Flagger's BuildCookie: the Set-Cookie value for ``name=value`` with these attributes."""
        parts = [cookie, f"Max-Age={max_age}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.http_only:
            parts.append("HttpOnly")
        if self.partitioned:
            parts.append("Partitioned")
        if self.path:
            parts.append(f"Path={self.path}")
        if self.same_site:
            parts.append(f"SameSite={self.same_site}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


class FastFail(ApiModel):
    """Roll back between analysis intervals as soon as the canary's error rate is clearly bad."""

    period: Duration = "5s"
    max_error_rate: Percentage
    min_requests: int = Field(default=20, ge=1)


# --- explicit steps --------------------------------------------------------------------------------


# Every metric of a check is queried at once and every hook of a gate is called in turn within one tick;
# the caps keep one Canary's tick (and its load on a shared metrics server) bounded.
MAX_METRICS: Final = 32
MAX_WEBHOOKS: Final = 32
MAX_ALERTS: Final = 16
MAX_STEPS: Final = 100
MetricList = Annotated[list[CanaryMetric], Field(max_length=MAX_METRICS)]
WebhookList = Annotated[list[CanaryWebhook], Field(max_length=MAX_WEBHOOKS)]


class PauseStep(ApiModel):
    duration: Duration | None = None


class AnalysisStep(ApiModel):
    metrics: MetricList | None = None
    webhooks: WebhookList | None = None
    iterations: int = Field(default=1, ge=1)


class MirrorStep(ApiModel):
    percentage: Weight
    duration: Duration | None = None


class FaultDelay(ApiModel):
    fixed_delay: Duration
    percentage: Percentage


class FaultAbort(ApiModel):
    http_status: int = Field(ge=200, le=599)
    percentage: Percentage


class FaultStep(ApiModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    duration: Duration
    target: Literal["canary"] = "canary"

    @model_validator(mode="after")
    def _has_fault(self) -> FaultStep:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault step needs delay, abort or both")
        return self


class HeaderRouteStep(ApiModel):
    match: list[HTTPMatchRequest] = Field(min_length=1)


STEP_KINDS = ("set_weight", "pause", "analysis", "mirror", "fault", "header_route")


class CanaryStep(ApiModel):
    """One explicit step; exactly one of its fields is set (as in Argo Rollouts)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    set_weight: Weight | None = None
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None
    mirror: MirrorStep | None = None
    fault: FaultStep | None = None
    header_route: HeaderRouteStep | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        given = [to_camel(k) for k in STEP_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            names = ", ".join(to_camel(k) for k in STEP_KINDS)
            raise ValueError(f"a step sets exactly one of {names}; got {given or 'none'}")
        return self


class CanaryAnalysis(ApiModel):
    interval: Duration = "60s"
    iterations: int | None = Field(default=None, ge=0)
    mirror: bool = False
    mirror_weight: Weight | None = None
    max_weight: Weight | None = None
    step_weight: Weight | None = None
    step_weights: list[Weight] | None = None
    step_weight_promotion: Weight | None = None
    threshold: int = Field(default=1, ge=0)
    primary_ready_threshold: Weight = 100
    canary_ready_threshold: Weight = 100
    alerts: list[CanaryAlert] | None = Field(default=None, max_length=MAX_ALERTS)
    metrics: MetricList | None = None
    webhooks: WebhookList | None = None
    match: list[HTTPMatchRequest] | None = Field(default=None, max_length=MAX_MATCHES)
    session_affinity: SessionAffinity | None = None
    steps: list[CanaryStep] | None = Field(default=None, max_length=MAX_STEPS)
    fast_fail: FastFail | None = None

    # Flagger's floor for analysis intervals. The operator's hidden ``--min-interval-seconds`` (for tests
    # and benchmarks against an emulator) lowers it for the Canaries it validates, through the
    # validation context (``MIN_INTERVAL_CONTEXT``), never here.
    min_interval_seconds: ClassVar[float] = 10.0
    _interval_floor: float | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _floor_from_context(self, info: ValidationInfo) -> CanaryAnalysis:
        floor = info.context.get(MIN_INTERVAL_CONTEXT) if isinstance(info.context, dict) else None
        if floor is not None:
            self._interval_floor = float(floor)
        return self

    @property
    def interval_seconds(self) -> float:
        """Flagger clamps intervals below 10s up to 10s."""
        floor = self.min_interval_seconds if self._interval_floor is None else self._interval_floor
        return max(parse_duration(self.interval), floor)

    @property
    def failure_threshold(self) -> int:
        return self.threshold if self.threshold > 0 else 1

    @model_validator(mode="after")
    def _bounded_across_steps(self) -> CanaryAnalysis:
        """The status keeps one entry per metric and per webhook name, over all steps: cap the names."""
        analyses = [step.analysis for step in self.steps or () if step.analysis is not None]
        for field, cap in (("metrics", MAX_METRICS), ("webhooks", MAX_WEBHOOKS)):
            lists = [getattr(self, field) or [], *(getattr(a, field) or [] for a in analyses)]
            names = {item.name for items in lists for item in items}
            if len(names) > cap:
                raise ValueError(f"{len(names)} {field} names over analysis and its steps; at most {cap}")
        return self


# ---------------------------------------------------------------------------------------------------
# Canary
# ---------------------------------------------------------------------------------------------------

INCLUDED_MESH = "canaryctl"
PRIMARY_SUFFIX = "-primary"
CANARY_SUFFIX = "-canary"


class CanarySpec(ApiModel):
    provider: str | None = None
    metrics_server: str | None = None
    target_ref: TargetRef
    autoscaler_ref: AutoscalerRef | None = None
    ingress_ref: CrossNamespaceObjectReference | None = None
    route_ref: CrossNamespaceObjectReference | None = None
    upstream_ref: CrossNamespaceObjectReference | None = None
    service_spec: CanaryService | None = Field(
        default=None, alias="service", description="How Services and routes are generated"
    )
    analysis: CanaryAnalysis | None = None
    canary_analysis: CanaryAnalysis | None = Field(default=None, description="Deprecated: use analysis")
    progress_deadline_seconds: int = Field(default=600, ge=1)
    skip_analysis: bool = False
    revert_on_deletion: bool = False
    suspend: bool = False

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not plugins_checked(info):
            return value
        return registry.check(registry.ROUTERS, value)

    @property
    def effective_analysis(self) -> CanaryAnalysis:
        return self.analysis or self.canary_analysis or CanaryAnalysis()

    @property
    def service(self) -> CanaryService:
        """``spec.service``, which routers and generated Services need (for its port at least).

        Flagger's schema lets it be omitted (Knative Canaries have none), and so does canaryctl's; a
        component that needs it raises here, naming the field, instead of guessing a port.
        """
        if self.service_spec is None:
            raise ValueError(
                "spec.service is not set: canaryctl generates Services and routes from spec.service "
                "(port at least)"
            )
        return self.service_spec

    @property
    def apex_name(self) -> str:
        """The apex Service: ``spec.service.name``, else the target's name (Flagger's default)."""
        name = self.service_spec.name if self.service_spec is not None else None
        return name or self.target_ref.name

    def side_service(self, primary: bool) -> str:
        """Flagger's generated Services: ``<apex>-primary`` and ``<apex>-canary``."""
        return self.apex_name + (PRIMARY_SUFFIX if primary else CANARY_SUFFIX)


class Phase(StrEnum):
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    last_update_time: str | None = None


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no-data"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"


MAX_STATUS_QUERY_CHARS: Final = 2048


class MetricStatus(ApiModel):
    """The last analysis result of one metric, as the plugin shows it."""

    name: str
    value: float | None = None
    primary_value: float | None = None
    min: float | None = None
    max: float | None = None
    verdict: Verdict
    message: str = ""
    provider: str | None = None
    query: str | None = Field(
        default=None, description=f"The rendered query, cut to {MAX_STATUS_QUERY_CHARS} characters"
    )
    time: str | None = None

    @field_validator("query")
    @classmethod
    def _bounded_query(cls, value: str | None) -> str | None:
        """A rendered query is the template author's text: the status keeps a bounded prefix of it."""
        if value is None or len(value) <= MAX_STATUS_QUERY_CHARS:
            return value
        kept = MAX_STATUS_QUERY_CHARS - 40  # room for the marker
        return f"{value[:kept]}... [{len(value) - kept} more characters]"


class WebhookStatus(ApiModel):
    name: str
    type: WebhookType
    success: bool
    status_code: int | None = None
    message: str = ""
    time: str | None = None


class FaultStatus(ApiModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class CanaryStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = None
    message: str = ""
    canary_weight: Weight = 0
    mirror_weight: Weight = 0
    header_route: bool = False
    fault: FaultStatus | None = None
    failed_checks: int = 0
    iterations: int = 0
    current_step: int = 0
    total_steps: int = 0
    step_started_at: str | None = None
    last_analysis_at: str | None = None
    held_since: str | None = None
    pre_rollout_done: bool = False
    paused: bool = False
    last_handled_command: str | None = None
    last_applied_spec: str | None = None
    last_promoted_spec: str | None = None
    tracked_configs: dict[str, str] | None = None
    last_transition_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    metrics: list[MetricStatus] = Field(default_factory=list)
    webhooks: list[WebhookStatus] = Field(default_factory=list)
    observed_generation: int | None = None


class ObjectMeta(OpenModel):
    name: str | None = None
    namespace: str | None = None


class Canary(ApiModel):
    api_version: Literal["canaryctl.dev/v1beta1"] = API_VERSION
    kind: Literal["Canary"] = "Canary"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CanarySpec
    status: CanaryStatus | None = None


# ---------------------------------------------------------------------------------------------------
# MetricTemplate and AlertProvider
# ---------------------------------------------------------------------------------------------------


class MetricTemplateProvider(ApiModel):
    type: str = "prometheus"
    address: str | None = None
    secret_ref: LocalObjectReference | None = None
    headers: dict[str, str | list[str]] | None = None
    insecure_skip_verify: bool = False
    region: str | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str, info: ValidationInfo) -> str:
        return registry.check(registry.METRICS, value) if plugins_checked(info) else value


class MetricTemplateSpec(ApiModel):
    provider: MetricTemplateProvider = Field(default_factory=MetricTemplateProvider)
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)


class MetricTemplate(ApiModel):
    api_version: Literal["canaryctl.dev/v1beta1"] = API_VERSION
    kind: Literal["MetricTemplate"] = "MetricTemplate"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MetricTemplateSpec


class AlertProviderType(StrEnum):
    """The built-in notifiers; an installed distribution may register more (``canaryctl.notifiers``)."""

    SLACK = "slack"
    MSTEAMS = "msteams"
    DISCORD = "discord"
    ROCKET = "rocket"
    GCHAT = "gchat"
    GENERIC = "generic"


class AlertProviderSpec(ApiModel):
    type: str = Field(
        max_length=63, description="A notifier an installed distribution registers (slack, msteams, ...)"
    )
    channel: str | None = None
    username: str | None = None
    address: str | None = None
    proxy: str | None = None
    secret_ref: LocalObjectReference | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str, info: ValidationInfo) -> str:
        return registry.check(registry.NOTIFIERS, value) if plugins_checked(info) else value


class AlertProviderStatus(ApiModel):
    """Flagger's: conditions only. The controller keeps a Ready condition: whether the spec is usable."""

    conditions: list[Condition] = Field(default_factory=list)


class AlertProvider(ApiModel):
    api_version: Literal["canaryctl.dev/v1beta1"] = API_VERSION
    kind: Literal["AlertProvider"] = "AlertProvider"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AlertProviderSpec
    status: AlertProviderStatus | None = None


KINDS: dict[str, type[ApiModel]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
}
