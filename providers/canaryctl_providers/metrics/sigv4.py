"""AWS Signature Version 4 with hashlib/hmac only, so CloudWatch needs no AWS SDK.

Follows the published algorithm: canonical request -> string to sign -> HMAC chain of
date/region/service/"aws4_request" -> hex signature in the Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _encode(text: str) -> str:
    """RFC 3986 encoding: everything but unreserved characters is percent-encoded."""
    return quote(text, safe="-_.~")


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def canonical_request(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """The canonical request text and the ``;``-joined signed header names."""
    parts = urlsplit(url)
    query = sorted((_encode(k), _encode(v)) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    canonical_headers = sorted((name.lower(), " ".join(value.split())) for name, value in headers.items())
    signed = ";".join(name for name, _ in canonical_headers)
    text = "\n".join(
        [
            method.upper(),
            quote(parts.path or "/", safe="/-_.~"),
            "&".join(f"{k}={v}" for k, v in query),
            "".join(f"{name}:{value}\n" for name, value in canonical_headers),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    return text, signed


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """``headers`` plus Host, X-Amz-Date, the session token if any, and Authorization."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    signed_headers = {"Host": urlsplit(url).netloc, **headers, "X-Amz-Date": amz_date}
    if credentials.session_token:
        signed_headers["X-Amz-Security-Token"] = credentials.session_token
    text, names = canonical_request(method, url, signed_headers, body)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(text.encode()).hexdigest()])
    signature = hmac.new(
        signing_key(credentials.secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    credential = f"Credential={credentials.access_key}/{scope}"
    authorization = f"{ALGORITHM} {credential}, SignedHeaders={names}, Signature={signature}"
    return {**signed_headers, "Authorization": authorization}
