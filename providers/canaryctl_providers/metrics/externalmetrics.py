"""The Kubernetes external metrics API (``external.metrics.k8s.io/v1beta1``), which KEDA,
prometheus-adapter and the Datadog Cluster Agent serve for HPAs.

The query is Flagger's: ``[<namespace>/]<metric>[?labelSelector=<url-encoded selector>]``, the
namespace ``default`` when left out. The value is the first item's Quantity.

Who is asked, with whose credentials:

- no ``address``, no token: the cluster's API server with the controller's own access. A template may
  then read its own namespace only (what an HPA there could read), so a tenant's template cannot use
  the controller's rights to read another namespace's metrics.
- no ``address``, a ``token`` in the template's Secret: the API server with that token alone, which
  the API server authorizes as whatever identity it belongs to.
- an ``address`` (an adapter served directly): that address with the Secret's ``token`` if any, never
  the controller's credentials.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from decimal import ROUND_UP, Context, Decimal
from typing import Any

from canaryctl.api.models import MetricTemplateProvider
from canaryctl.ports import KubeApi, MetricScope
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import Endpoint, parse_json
from canaryctl_providers.outbound import kind_of

API_PATH = "/apis/external.metrics.k8s.io/v1beta1"
DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Kubernetes Quantity: a signed decimal, then a binary-SI, decimal-SI or exponent suffix. Each digit can
# belong to one place only, so a long run of digits that fails to match fails in linear time.
_QUANTITY = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
# Longer text is no quantity a metrics adapter sends; it is refused before any matching.
MAX_QUANTITY_CHARS = 64
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Kubernetes keeps a quantity to the nano, rounding finer non-zero values away from zero, and caps a
# binary-SI quantity at 2^63-1.
_NANO = Decimal("1e-9")
_MAX_BINARY = Decimal(2**63 - 1)
# A decimal exponent beyond this makes any quantity of MAX_QUANTITY_CHARS out of range or finer than nano.
_EXPONENT_BOUND = 400
_CONTEXT = Context(prec=MAX_QUANTITY_CHARS + 2 * _EXPONENT_BOUND)


def parse_quantity(text: str) -> float:
    """A Kubernetes Quantity (``250m``, ``1.5Ki``, ``2e3``) as a float, read as Kubernetes reads it."""
    text = text.strip()
    found = _QUANTITY.fullmatch(text) if len(text) <= MAX_QUANTITY_CHARS else None
    if found is None:
        raise MetricQueryError(f"external metric value is not a Kubernetes quantity but {kind_of(text)}")
    number, suffix = Decimal(found.group(1)), found.group(2) or ""
    if suffix in _BINARY_SI:
        amount = _CONTEXT.multiply(number, Decimal(2) ** _BINARY_SI[suffix])
        amount = min(amount.copy_abs(), _MAX_BINARY).copy_sign(number)
    else:
        exponent = _DECIMAL_SI[suffix] if suffix in _DECIMAL_SI else int(suffix[1:])
        amount = number.scaleb(max(-_EXPONENT_BOUND, min(_EXPONENT_BOUND, exponent)), _CONTEXT)
    if amount:
        amount = amount.quantize(_NANO, ROUND_UP, _CONTEXT)
    value = float(amount)
    if not math.isfinite(value):
        raise MetricQueryError(f"external metric value {text!r} is out of range")
    return value


def parse_query(query: str) -> tuple[str, str, str | None]:
    """(namespace, metric, label selector) of ``[<namespace>/]<metric>[?labelSelector=...]``."""
    path, _, raw_params = query.strip().partition("?")
    parts = path.lstrip("/").split("/") if path.startswith("/") else path.split("/")
    if len(parts) > 2:
        raise MetricQueryError(
            f"external metrics query {query[:100]!r} has too many '/': expected "
            "<namespace>/<metric>?labelSelector=<url-encoded selector>"
        )
    namespace, metric = (DEFAULT_NAMESPACE, parts[0]) if len(parts) == 1 else parts
    namespace = namespace or DEFAULT_NAMESPACE
    metric = urllib.parse.unquote(metric)
    if not metric or metric in (".", ".."):
        raise MetricQueryError(f"external metrics query {query[:100]!r} names no metric")
    if not _NAMESPACE.fullmatch(namespace):
        raise MetricQueryError(f"external metrics query namespace {namespace[:70]!r} is not a namespace name")
    selectors = urllib.parse.parse_qs(raw_params).get("labelSelector")
    return namespace, metric, selectors[0] if selectors else None


class ExternalMetricsProvider:
    def __init__(
        self, spec: MetricTemplateProvider, secret: dict[str, str] | None, scope: MetricScope
    ) -> None:
        own = (secret or {}).get("token") if spec.secret_ref is not None else None
        self._token = own or None
        self._scope = scope
        self._endpoint: Endpoint | None = None
        self._cluster: KubeApi | None = None
        if spec.address:
            auth = {"Authorization": f"Bearer {self._token}"} if self._token else None
            self._endpoint = Endpoint.from_spec(spec, auth)
        elif scope.cluster is None:
            raise ProviderConfigError(
                "externalmetrics without spec.provider.address reads the cluster's API, and there is no "
                "cluster here"
            )
        else:
            self._cluster = scope.cluster

    def _check_namespace(self, namespace: str) -> None:
        """With the controller's own access, only the template's namespace may be read."""
        if self._endpoint is not None or self._token is not None or namespace == self._scope.namespace:
            return
        raise MetricQueryError(
            f"external metrics query reads namespace {namespace!r}, but a MetricTemplate in namespace "
            f"{self._scope.namespace!r} may only read its own namespace with the controller's access "
            "(write <namespace>/<metric>, or give the template a token of its own in secretRef)"
        )

    async def _list(self, namespace: str, metric: str, selector: str | None) -> Any:
        path = f"{API_PATH}/namespaces/{namespace}/{urllib.parse.quote(metric, safe='')}"
        params = {"labelSelector": selector} if selector else None
        if self._endpoint is not None:
            return parse_json(await self._endpoint.send("GET", path, params=params))
        assert self._cluster is not None
        return await self._cluster.request("GET", path, params=params, token=self._token)

    async def query(self, query: str) -> float | None:
        namespace, metric, selector = parse_query(query)
        self._check_namespace(namespace)
        body = await self._list(namespace, metric, selector)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise MetricQueryError(f"unexpected external metrics response: {kind_of(body)}, no 'items' list")
        if not items:
            return None
        value = items[0].get("value") if isinstance(items[0], dict) else None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise MetricQueryError(f"external metric item has no value: {kind_of(items[0])}")
        return parse_quantity(str(value))

    async def is_online(self) -> bool:
        """The API group is served (where the template may look): its discovery document answers."""
        try:
            if self._endpoint is not None:
                parse_json(await self._endpoint.send("GET", API_PATH))
            else:
                assert self._cluster is not None
                await self._cluster.request("GET", API_PATH, token=self._token)
        except MetricQueryError:
            return False
        return True
