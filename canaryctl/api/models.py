"""The canaryctl.dev/v1beta1 API: Canary, MetricTemplate and AlertProvider.

These pydantic models are the single source of truth: the CRDs in ``crds/`` are generated from them,
``canaryctl lint`` validates with them and the engine reads them. Field names and defaults follow
Flagger's flagger.app/v1beta1 Canary so a Flagger manifest validates after changing only its apiVersion;
canaryctl's additions (steps, fault, compare, onNoData, fastFail) are optional.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from canaryctl import registry
from canaryctl.api.duration import parse_duration

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


def plugins_checked(info: ValidationInfo) -> bool:
    return not (isinstance(info.context, dict) and info.context.get("plugins") == "unchecked")


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


Duration = Annotated[str, Field(description="Go duration, e.g. 30s, 1m, 1m30s")]


# ---------------------------------------------------------------------------------------------------
# References and shared shapes
# ---------------------------------------------------------------------------------------------------


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    DAEMON_SET = "DaemonSet"
    SERVICE = "Service"


class TargetRef(ApiModel):
    api_version: str | None = None
    kind: TargetKind
    name: str = Field(min_length=1)


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


class StringMatch(ApiModel):
    """Istio StringMatch: exactly one of exact, prefix, regex (suffix for Gateway API paths)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex", "suffix") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of exact, prefix, regex or suffix must be set")
        return self


class HTTPMatchRequest(OpenModel):
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
    port: int | None = None
    ignore_uri_case: bool | None = None


class CustomMetadata(ApiModel):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class HTTPRetry(ApiModel):
    attempts: int = Field(ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str | None = None

    _per_try = field_validator("per_try_timeout")(_check_duration)


class HTTPRewrite(OpenModel):
    uri: str | None = None
    authority: str | None = None


# ---------------------------------------------------------------------------------------------------
# spec.service
# ---------------------------------------------------------------------------------------------------


class CanaryService(ApiModel):
    name: str | None = None
    port: int = Field(ge=1, le=65535)
    port_name: str = "http"
    target_port: Annotated[
        int | str | None,
        Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
    ] = None
    app_protocol: str | None = None
    port_discovery: bool = False
    headless: bool = False
    timeout: Duration | None = None
    gateways: list[str] | None = None
    gateway_refs: list[OpenModel] | None = None
    hosts: list[str] | None = None
    delegation: bool | None = None
    traffic_policy: OpenModel | None = None
    match: list[HTTPMatchRequest] | None = None
    rewrite: HTTPRewrite | None = None
    retries: HTTPRetry | None = None
    headers: OpenModel | None = None
    cors_policy: OpenModel | None = None
    mesh_name: str | None = None
    backends: list[str] | None = None
    apex: CustomMetadata | None = None
    primary: CustomMetadata | None = None
    canary: CustomMetadata | None = None

    _timeout = field_validator("timeout")(_check_duration)


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


class CanaryMetric(ApiModel):
    name: str = Field(min_length=1)
    interval: Duration | None = None
    threshold: float | None = None
    threshold_range: ThresholdRange | None = None
    query: str | None = None
    template_ref: CrossNamespaceObjectReference | None = None
    template_variables: dict[str, str] | None = None
    on_no_data: NoDataPolicy = NoDataPolicy.HOLD
    compare: MetricComparison | None = None

    _interval = field_validator("interval")(_check_duration)


class WebhookType(StrEnum):
    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"
    EVENT = "event"


class CanaryWebhook(ApiModel):
    type: WebhookType = WebhookType.ROLLOUT
    name: str = Field(min_length=1)
    url: str = Field(min_length=1)
    timeout: Duration | None = None
    metadata: dict[str, str] | None = None
    mute_alert: bool = False
    retries: int | None = Field(default=None, ge=0)

    _timeout = field_validator("timeout")(_check_duration)

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
    severity: Severity = Severity.INFO
    provider_ref: CrossNamespaceObjectReference


class SessionAffinity(ApiModel):
    cookie_name: str = Field(min_length=1)
    max_age: int = Field(default=86400, ge=1)
    primary_cookie_name: str | None = None


class FastFail(ApiModel):
    """Roll back between analysis intervals as soon as the canary's error rate is clearly bad."""

    period: Duration = "5s"
    max_error_rate: Percentage
    min_requests: int = Field(default=20, ge=1)

    _period = field_validator("period")(_check_duration)


# --- explicit steps --------------------------------------------------------------------------------


class PauseStep(ApiModel):
    duration: Duration | None = None

    _duration = field_validator("duration")(_check_duration)


class AnalysisStep(ApiModel):
    metrics: list[CanaryMetric] | None = None
    webhooks: list[CanaryWebhook] | None = None
    iterations: int = Field(default=1, ge=1)


class MirrorStep(ApiModel):
    percentage: Weight
    duration: Duration | None = None

    _duration = field_validator("duration")(_check_duration)


class FaultDelay(ApiModel):
    fixed_delay: Duration
    percentage: Percentage

    _fixed = field_validator("fixed_delay")(_check_duration)


class FaultAbort(ApiModel):
    http_status: int = Field(ge=200, le=599)
    percentage: Percentage


class FaultStep(ApiModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    duration: Duration
    target: Literal["canary"] = "canary"

    _duration = field_validator("duration")(_check_duration)

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
    alerts: list[CanaryAlert] | None = None
    metrics: list[CanaryMetric] | None = None
    webhooks: list[CanaryWebhook] | None = None
    match: list[HTTPMatchRequest] | None = None
    session_affinity: SessionAffinity | None = None
    steps: list[CanaryStep] | None = None
    fast_fail: FastFail | None = None

    _interval = field_validator("interval")(_check_duration)

    # Flagger's floor for analysis intervals. Only the operator's hidden ``--min-interval-seconds`` (for
    # tests and benchmarks against an emulator) lowers it.
    min_interval_seconds: ClassVar[float] = 10.0

    @property
    def interval_seconds(self) -> float:
        """Flagger clamps intervals below 10s up to 10s."""
        return max(parse_duration(self.interval), self.min_interval_seconds)

    @property
    def failure_threshold(self) -> int:
        return self.threshold if self.threshold > 0 else 1


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
    service: CanaryService
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
    def apex_name(self) -> str:
        return self.service.name or self.target_ref.name

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
    query: str | None = None
    time: str | None = None


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
    query: str = Field(min_length=1)


class MetricTemplate(ApiModel):
    api_version: Literal["canaryctl.dev/v1beta1"] = API_VERSION
    kind: Literal["MetricTemplate"] = "MetricTemplate"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MetricTemplateSpec


class AlertProviderType(StrEnum):
    SLACK = "slack"
    MSTEAMS = "msteams"
    DISCORD = "discord"
    ROCKET = "rocket"
    GCHAT = "gchat"
    GENERIC = "generic"


class AlertProviderSpec(ApiModel):
    type: AlertProviderType
    channel: str | None = None
    username: str | None = None
    address: str | None = None
    proxy: str | None = None
    secret_ref: LocalObjectReference | None = None


class AlertProvider(ApiModel):
    api_version: Literal["canaryctl.dev/v1beta1"] = API_VERSION
    kind: Literal["AlertProvider"] = "AlertProvider"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AlertProviderSpec


KINDS: dict[str, type[ApiModel]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
}
