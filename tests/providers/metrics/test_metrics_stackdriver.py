"""Google Cloud Monitoring (Stackdriver) MQL against a local server: the REST form of Flagger's
QueryTimeSeries call (``POST /v3/projects/<project>/timeSeries:query`` with ``{"query": ...}``), a
self-signed service-account JWT checked here with the key's public half, and real-shaped answers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from canaryctl.api.models import LocalObjectReference, MetricTemplateProvider
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, provider_for
from canaryctl_providers.metrics import stackdriver as stackdriver_module
from tests.loop_stalls import loop_stalls

PROJECT = "canary-project-1"
QUERY_PATH = f"/v3/projects/{PROJECT}/timeSeries:query"
EMAIL = "canary-reader@canary-project-1.iam.gserviceaccount.com"
MQL = "fetch k8s_container | metric 'istio.io/service/server/response_latencies' | every 1m"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def secret_for(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A Secret as Flagger documents it: ``project`` and ``serviceAccountKey`` (a downloaded JSON key)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    service_account = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "100000000000000000001",
        # Never contacted: the token is self-signed for the Monitoring API.
        "token_uri": "http://127.0.0.1:9/token",
    }
    return {"project": PROJECT, "serviceAccountKey": json.dumps(service_account)}


def stackdriver(address: str) -> MetricTemplateProvider:
    return MetricTemplateProvider(
        type="stackdriver", address=address, secret_ref=LocalObjectReference(name="gcloud-sa")
    )


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verified_claims(authorization: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The claims of an RS256 bearer JWT whose signature the key's public half verifies."""
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    header, payload, signature = token.split(".")
    assert json.loads(_b64(header))["alg"] == "RS256"
    key.public_key().verify(
        _b64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    claims: dict[str, Any] = json.loads(_b64(payload))
    return claims


def answer(*points: dict[str, Any]) -> dict[str, Any]:
    """The shape of a timeSeries:query answer with one series."""
    descriptor = {
        "labelDescriptors": [{"key": "resource.project_id"}],
        "pointDescriptors": [
            {"key": "value.response_latencies_percentile", "valueType": "DOUBLE", "metricKind": "GAUGE"}
        ],
    }
    interval = {"startTime": "2026-11-30T15:00:00Z", "endTime": "2026-11-30T15:00:00Z"}
    series = [
        {
            "labelValues": [{"stringValue": PROJECT}],
            "pointData": [{"values": [point], "timeInterval": interval} for point in points],
        }
    ]
    return {"timeSeriesDescriptor": descriptor, "timeSeriesData": series}


def test_query_request_auth_and_value(fake_api: Any, key: rsa.RSAPrivateKey) -> None:
    fake_api.reply("POST", QUERY_PATH, answer({"doubleValue": 87.5}, {"doubleValue": 12.0}))
    provider = provider_for(stackdriver(fake_api.url), secret_for(key))
    assert asyncio.run(provider.query(MQL)) == 87.5  # the first point, as Flagger
    request = fake_api.last
    assert request.json() == {"query": MQL}
    assert request.headers["content-type"] == "application/json"
    claims = verified_claims(request.headers["authorization"], key)
    assert (claims["iss"], claims["sub"]) == (EMAIL, EMAIL)
    assert claims["aud"] == "https://monitoring.googleapis.com/"
    assert claims["iat"] <= time.time() + 5 < claims["exp"] <= time.time() + 3600


def test_int64_values_no_data_and_errors(fake_api: Any, key: rsa.RSAPrivateKey) -> None:
    provider = provider_for(stackdriver(fake_api.url), secret_for(key))
    fake_api.reply("POST", QUERY_PATH, answer({"int64Value": "42"}))  # int64 travels as a JSON string
    assert asyncio.run(provider.query(MQL)) == 42.0
    fake_api.reply("POST", QUERY_PATH, {"timeSeriesDescriptor": {"pointDescriptors": []}})
    assert asyncio.run(provider.query(MQL)) is None
    fake_api.reply("POST", QUERY_PATH, answer({"stringValue": "high"}))
    with pytest.raises(MetricQueryError, match="not a number"):
        asyncio.run(provider.query(MQL))
    denied = {
        "error": {
            "code": 403,
            "message": "Permission monitoring.timeSeries.list denied",
            "status": "PERMISSION_DENIED",
        }
    }
    fake_api.reply("POST", QUERY_PATH, denied, status=403)
    with pytest.raises(MetricQueryError, match="PERMISSION_DENIED"):
        asyncio.run(provider.query(MQL))


def test_is_online_expects_an_empty_query_to_be_invalid(fake_api: Any, key: rsa.RSAPrivateKey) -> None:
    """Flagger's check: with working credentials an empty query is INVALID_ARGUMENT (400)."""
    provider = provider_for(stackdriver(fake_api.url), secret_for(key))
    invalid = {"error": {"code": 400, "message": "Query is empty", "status": "INVALID_ARGUMENT"}}
    fake_api.reply("POST", QUERY_PATH, invalid, status=400)
    assert asyncio.run(provider.is_online()) is True
    assert fake_api.last.json() == {"query": ""}
    fake_api.reply("POST", QUERY_PATH, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
    assert asyncio.run(provider.is_online()) is False


def test_only_the_templates_own_key_is_used(fake_api: Any, key: rsa.RSAPrivateKey) -> None:
    """Without a serviceAccountKey Flagger falls back to the controller's Google credentials; canaryctl
    refuses instead, so a template cannot query Cloud Monitoring as the controller."""
    with pytest.raises(ProviderConfigError, match="serviceAccountKey"):
        provider_for(stackdriver(fake_api.url), {"project": PROJECT})
    with pytest.raises(ProviderConfigError, match="secretRef"):
        provider_for(MetricTemplateProvider(type="stackdriver", address=fake_api.url), None)
    with pytest.raises(ProviderConfigError, match="not a service account key") as error:
        provider_for(stackdriver(fake_api.url), {"project": PROJECT, "serviceAccountKey": "hunter2-secret"})
    assert "hunter2" not in str(error.value)
    with pytest.raises(ProviderConfigError, match="not a project"):
        provider_for(stackdriver(fake_api.url), {**secret_for(key), "project": "../../evil"})
    assert fake_api.requests == []


def oversized_key_secret(bits: int) -> dict[str, str]:
    """A key file whose RSA key has a ``bits``-bit modulus, made without generating primes (that takes
    minutes at 16,384 bits): its numbers are not a valid key, which only a full check would find."""
    p = (3 << (bits // 2 - 2)) | 1  # 1.5 · 2^(bits/2 - 1): p·q has exactly ``bits`` bits
    q = p + 2
    public = rsa.RSAPublicNumbers(65537, p * q)
    numbers = rsa.RSAPrivateNumbers(p, q, 3, 1, 1, pow(q, -1, p), public)
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    assert key.key_size == bits
    return secret_for(key)


def test_a_key_above_4096_bits_is_refused_without_the_slow_check(fake_api: Any) -> None:
    """Checking a tenant's key took 0.45 s at 4,096 bits and tens of seconds at 16,384, on the event
    loop, for each query of each tick."""
    fake_api.reply("POST", QUERY_PATH, answer({"doubleValue": 1.0}))
    provider = provider_for(stackdriver(fake_api.url), oversized_key_secret(8192))
    started = time.monotonic()
    with pytest.raises(ProviderConfigError, match="8192-bit key; at most 4096 bits"):
        asyncio.run(provider.query(MQL))
    assert time.monotonic() - started < 1.0
    assert fake_api.requests == []


@pytest.fixture(scope="module")
def big_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def test_a_4096_bit_key_is_loaded_once_and_never_stalls_the_event_loop(
    fake_api: Any, big_key: rsa.RSAPrivateKey
) -> None:
    """The analyzer builds a provider for each query; each used to load and check the key on the event
    loop (0.45 s at 4,096 bits, every Canary waiting). The key is now read once per Secret content and
    a token signed once per lifetime, off the loop."""
    fake_api.reply("POST", QUERY_PATH, answer({"doubleValue": 2.0}))
    secret = secret_for(big_key)

    async def main() -> float:
        async with loop_stalls(0.005, settle=0.02) as stalls:
            for _ in range(8):
                assert await provider_for(stackdriver(fake_api.url), secret).query(MQL) == 2.0
        return max(stalls)

    longest_stall = asyncio.run(main())
    started = time.monotonic()  # what each query used to cost the event loop, on this machine now
    pem = big_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    serialization.load_pem_private_key(pem, None)
    checked_load = time.monotonic() - started
    assert longest_stall < checked_load / 2, (longest_stall, checked_load)
    tokens = {request.headers["authorization"] for request in fake_api.requests}
    assert len(tokens) == 1  # one signed token for all eight queries
    verified_claims(tokens.pop(), big_key)


def test_loaded_keys_are_bounded(key: rsa.RSAPrivateKey) -> None:
    for index in range(stackdriver_module.MAX_CACHED_KEYS + 20):
        secret = secret_for(key)
        secret["serviceAccountKey"] = secret["serviceAccountKey"].replace(EMAIL, f"sa-{index}@{PROJECT}.iam")
        provider_for(stackdriver("http://127.0.0.1:9"), secret)
    assert len(stackdriver_module._keys) == stackdriver_module.MAX_CACHED_KEYS
