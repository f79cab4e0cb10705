"""Google Cloud Monitoring (Stackdriver) MQL: ``POST /v3/projects/<project>/timeSeries:query``.

Authenticated with the template's own service-account key only, as a self-signed JWT (Google's
"service account authorization without OAuth"): the key signs a short-lived token for the Monitoring
API here, so nothing but that API is called and no token endpoint the key names is ever contacted.
Unlike Flagger, never with the controller's own Google credentials (Application Default Credentials,
Workload Identity): a template author must not be able to query Cloud Monitoring as the controller.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from google.auth import crypt, exceptions, jwt

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float

DEFAULT_ADDRESS = "https://monitoring.googleapis.com"
# The Monitoring API's audience for self-signed JWTs, whatever address serves it (a private endpoint).
AUDIENCE = "https://monitoring.googleapis.com/"
TOKEN_LIFETIME_SECONDS = 600
# Project IDs (6-30 of a-z, 0-9 and -, starting with a letter) or project numbers.
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")


def _signer(spec: MetricTemplateProvider, secret: dict[str, str] | None) -> tuple[crypt.Signer, str]:
    """The key's signer and service account address, from the template's Secret and nowhere else."""
    if spec.secret_ref is None:
        raise ProviderConfigError(
            "stackdriver needs spec.provider.secretRef with project and serviceAccountKey; the "
            "controller's own Google credentials are never used"
        )
    key = require(secret, "serviceAccountKey", "stackdriver")
    try:
        info = json.loads(key)
        if not isinstance(info, dict) or not info.get("client_email"):
            raise ValueError("no client_email")
        signer: crypt.Signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, exceptions.GoogleAuthError) as exc:
        # The key's text stays out of the message: it is a credential.
        raise ProviderConfigError(
            f"stackdriver serviceAccountKey is not a service account key in JSON ({type(exc).__name__})"
        ) from None
    return signer, str(info["client_email"])


class StackdriverProvider:
    """The value is the first value of the first point of the first time series, as in Flagger."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None) -> None:
        self._signer, self._email = _signer(spec, secret)
        project = require(secret, "project", "stackdriver")
        if not _PROJECT.fullmatch(project):
            raise ProviderConfigError(f"stackdriver project {project[:40]!r} is not a project ID or number")
        self._path = f"/v3/projects/{project}/timeSeries:query"
        self._endpoint = Endpoint.from_spec(spec, None, DEFAULT_ADDRESS)

    def _authorization(self) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "iss": self._email,
            "sub": self._email,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
        }
        token = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return {"Authorization": f"Bearer {token.decode() if isinstance(token, bytes) else token}"}

    async def _query(self, query: str) -> Any:
        reply = await self._endpoint.send(
            "POST", self._path, json_body={"query": query}, headers=self._authorization()
        )
        return parse_json(reply)

    async def query(self, query: str) -> float | None:
        return _value(await self._query(query))

    async def is_online(self) -> bool:
        """An empty query is answered 400 (INVALID_ARGUMENT) once auth passes (Flagger's check)."""
        try:
            await self._query("")
        except MetricQueryError as exc:
            return exc.status == 400
        return True


def _value(body: Any) -> float | None:
    """``{"timeSeriesData": [{"pointData": [{"values": [{"doubleValue": 1.5}]}]}]}``; an int64Value
    (a JSON string) counts too, where Flagger reads only doubles."""
    if not isinstance(body, dict):
        raise MetricQueryError(f"unexpected Cloud Monitoring response: {body!r}"[:300])
    series = body.get("timeSeriesData") or [{}]
    points = series[0].get("pointData") if isinstance(series[0], dict) else None
    values = points[0].get("values") if points and isinstance(points[0], dict) else None
    if not values or not isinstance(values[0], dict):
        return None
    typed = values[0]
    for kind in ("doubleValue", "int64Value"):
        if kind in typed:
            return to_float(typed[kind])
    raise MetricQueryError(f"Cloud Monitoring value {json.dumps(typed)[:200]} is not a number")
