"""Google Cloud Monitoring (Stackdriver) MQL: ``POST /v3/projects/<project>/timeSeries:query``.

Authenticated with the template's own service-account key only, as a self-signed JWT (Google's
"service account authorization without OAuth"): the key signs a short-lived token for the Monitoring
API here, so nothing but that API is called and no token endpoint the key names is ever contacted.
Unlike Flagger, never with the controller's own Google credentials (Application Default Credentials,
Workload Identity): a template author must not be able to query Cloud Monitoring as the controller.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from canaryctl.api.models import MetricTemplateProvider
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError
from canaryctl_providers.metrics.transport import Endpoint, parse_json, require, to_float
from canaryctl_providers.outbound import excerpt, kind_of

DEFAULT_ADDRESS = "https://monitoring.googleapis.com"
# The Monitoring API's audience for self-signed JWTs, whatever address serves it (a private endpoint).
AUDIENCE = "https://monitoring.googleapis.com/"
TOKEN_LIFETIME_SECONDS = 600
# A token is signed again this long before it expires, so none expires in flight.
TOKEN_RENEW_BEFORE_SECONDS = 120
# Bigger keys cost seconds to load and to sign with; Google issues 2048-bit ones.
MAX_KEY_BITS = 4096
# A key file with a 4096-bit key has about 4,000 characters; the size is checked before any parsing.
MAX_KEY_FILE_CHARS = 8192
# Keys kept loaded (by content), the least recently used dropped first.
MAX_CACHED_KEYS = 64
NOT_A_KEY = "stackdriver serviceAccountKey is not a service account key in JSON"
# Project IDs (6-30 of a-z, 0-9 and -, starting with a letter) or project numbers.
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")


class _ServiceAccountKey:
    """One service account key: its signer, loaded once, and its token, signed again shortly before it
    expires.

    The key is a tenant's: it is read without the check of its numbers, which costs 0.07 s for a 2048-bit
    key, 0.45 s for a 4096-bit one and tens of seconds for bigger ones, holding the interpreter lock (so
    no worker thread would spare the event loop). An inconsistent key only signs tokens Google refuses.
    Signing (a few ms with a 4096-bit key, also under that lock) runs in a worker thread, once per token
    lifetime.
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self.email = str(info["client_email"])
        self._lock = threading.Lock()
        self._signer: crypt.Signer | None = None
        self._failure: ProviderConfigError | None = None
        self._token = ""
        self._renew_at = 0.0

    def _load(self) -> crypt.Signer:
        if self._failure is not None:
            raise self._failure
        if self._signer is None:
            try:
                key = serialization.load_pem_private_key(
                    self._info["private_key"].encode(), None, unsafe_skip_rsa_key_validation=True
                )
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                # The key's text stays out of the message: it is a credential.
                self._failure = ProviderConfigError(f"{NOT_A_KEY} ({type(exc).__name__})")
                raise self._failure from None
            if not isinstance(key, rsa.RSAPrivateKey):
                self._failure = ProviderConfigError(f"{NOT_A_KEY} (not an RSA key)")
            elif key.key_size > MAX_KEY_BITS:
                self._failure = ProviderConfigError(
                    f"stackdriver serviceAccountKey is a {key.key_size}-bit key; at most {MAX_KEY_BITS} "
                    "bits are accepted"
                )
            if self._failure is not None:
                raise self._failure
            self._signer = crypt.RSASigner(key, self._info.get("private_key_id"))  # type: ignore[no-untyped-call]
        return self._signer

    def current(self) -> str | None:
        """The bearer token while it is fresh, else None."""
        return f"Bearer {self._token}" if time.time() < self._renew_at else None

    def renew(self) -> str:
        """A fresh bearer token for the Monitoring API (a worker thread's work: it signs)."""
        with self._lock:
            now = time.time()
            if now >= self._renew_at:
                claims = {
                    "iss": self.email,
                    "sub": self.email,
                    "aud": AUDIENCE,
                    "iat": int(now),
                    "exp": int(now) + TOKEN_LIFETIME_SECONDS,
                }
                token = jwt.encode(self._load(), claims)  # type: ignore[no-untyped-call]
                self._token = token.decode() if isinstance(token, bytes) else token
                self._renew_at = now + TOKEN_LIFETIME_SECONDS - TOKEN_RENEW_BEFORE_SECONDS
            return f"Bearer {self._token}"


# Keys by the SHA-256 of the Secret's serviceAccountKey: a Secret that changes is a new key.
_keys: OrderedDict[str, _ServiceAccountKey] = OrderedDict()
_keys_lock = threading.Lock()


def _service_account_key(spec: MetricTemplateProvider, secret: dict[str, str] | None) -> _ServiceAccountKey:
    """The key of the template's Secret and nowhere else, checked only as far as is cheap."""
    if spec.secret_ref is None:
        raise ProviderConfigError(
            "stackdriver needs spec.provider.secretRef with project and serviceAccountKey; the "
            "controller's own Google credentials are never used"
        )
    text = require(secret, "serviceAccountKey", "stackdriver")
    if len(text) > MAX_KEY_FILE_CHARS:
        raise ProviderConfigError(
            f"stackdriver serviceAccountKey has {len(text)} characters; a service account key with an RSA "
            f"key of at most {MAX_KEY_BITS} bits has fewer than {MAX_KEY_FILE_CHARS}"
        )
    digest = hashlib.sha256(text.encode()).hexdigest()
    with _keys_lock:
        key = _keys.get(digest)
        if key is not None:
            _keys.move_to_end(digest)
            return key
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not (isinstance(info, dict) and info.get("client_email") and isinstance(info.get("private_key"), str)):
        raise ProviderConfigError(NOT_A_KEY)
    with _keys_lock:
        key = _keys.setdefault(digest, _ServiceAccountKey(info))
        _keys.move_to_end(digest)
        while len(_keys) > MAX_CACHED_KEYS:
            _keys.popitem(last=False)
    return key


class StackdriverProvider:
    """The value is the first value of the first point of the first time series, as in Flagger."""

    def __init__(self, spec: MetricTemplateProvider, secret: dict[str, str] | None) -> None:
        self._key = _service_account_key(spec, secret)
        project = require(secret, "project", "stackdriver")
        if not _PROJECT.fullmatch(project):
            raise ProviderConfigError(f"stackdriver project {project[:40]!r} is not a project ID or number")
        self._path = f"/v3/projects/{project}/timeSeries:query"
        self._endpoint = Endpoint.from_spec(spec, None, DEFAULT_ADDRESS)

    async def _authorization(self) -> dict[str, str]:
        token = self._key.current()
        if token is None:
            token = await asyncio.to_thread(self._key.renew)
        return {"Authorization": token}

    async def _query(self, query: str) -> Any:
        reply = await self._endpoint.send(
            "POST", self._path, json_body={"query": query}, headers=await self._authorization()
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
        raise MetricQueryError(f"unexpected Cloud Monitoring response: {kind_of(body)}")
    series = body.get("timeSeriesData") or [{}]
    points = series[0].get("pointData") if isinstance(series[0], dict) else None
    values = points[0].get("values") if points and isinstance(points[0], dict) else None
    if not values or not isinstance(values[0], dict):
        return None
    typed = values[0]
    for kind in ("doubleValue", "int64Value"):
        if kind in typed:
            return to_float(typed[kind])
    fields = excerpt(", ".join(sorted(typed)), 80)
    raise MetricQueryError(f"Cloud Monitoring value is not a number: it has {fields}, no doubleValue")
