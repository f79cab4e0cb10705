"""Each vendor provider against a local server speaking its documented API: request shape, auth headers,
response parsing, empty answers as no data, HTTP failures as MetricQueryError."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from canaryctl.api.models import LocalObjectReference, MetricTemplateProvider
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, provider_for
from canaryctl_providers.metrics.jsonpath import parse
from canaryctl_providers.metrics.sigv4 import Credentials, canonical_request, sign, signing_key
from canaryctl_providers.metrics.transport import to_float

SECRET = LocalObjectReference(name="creds")


def spec(type_: str, address: str, **extra: Any) -> MetricTemplateProvider:
    return MetricTemplateProvider(type=type_, address=address, **extra)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- prometheus --------------------------------------------------------------------------------------


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1700000000.0, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_prometheus_query_shape_bearer_token_and_custom_headers(fake_api: Any) -> None:
    fake_api.reply("GET", "/api/v1/query", vector("99.5"))
    provider = provider_for(
        spec("prometheus", fake_api.url, secret_ref=SECRET, headers={"X-Scope-OrgID": "team-a"}),
        {"token": "s3cr3t"},
    )
    assert run(provider.query("sum(\n  rate(x[1m])\n)")) == 99.5
    request = fake_api.last
    assert request.query["query"] == ["sum( rate(x[1m]) )"]
    assert request.headers["authorization"] == "Bearer s3cr3t"
    assert request.headers["x-scope-orgid"] == "team-a"


def test_prometheus_basic_auth_scalar_empty_and_nan(fake_api: Any) -> None:
    provider = provider_for(
        spec("prometheus", fake_api.url, secret_ref=SECRET), {"username": "u", "password": "p"}
    )
    fake_api.reply(
        "GET", "/api/v1/query", {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    )
    assert run(provider.query("scalar(x)")) == 3.0
    assert fake_api.last.headers["authorization"] == basic("u", "p")
    fake_api.reply("GET", "/api/v1/query", vector())
    assert run(provider.query("x")) is None
    fake_api.reply("GET", "/api/v1/query", vector("NaN"))
    assert run(provider.query("x")) is None
    fake_api.reply("GET", "/api/v1/query", vector("1"))
    assert run(provider.is_online()) is True


def test_prometheus_errors(fake_api: Any) -> None:
    provider = provider_for(spec("prometheus", fake_api.url), None)
    fake_api.reply("GET", "/api/v1/query", {"status": "error", "error": "parse error"}, status=400)
    with pytest.raises(MetricQueryError, match="400"):
        run(provider.query("sum("))
    assert run(provider.is_online()) is False
    with pytest.raises(ProviderConfigError, match="username"):
        provider_for(spec("prometheus", fake_api.url, secret_ref=SECRET), {"password": "p"})


def test_prometheus_unreachable_is_an_error_not_a_value() -> None:
    provider = provider_for(spec("prometheus", "http://127.0.0.1:9"), None)
    with pytest.raises(MetricQueryError):
        run(provider.query("up"))


@pytest.mark.parametrize("type_", ["prometheus", "web"])
def test_insecure_skip_verify_accepts_a_self_signed_certificate(fake_tls_api: Any, type_: str) -> None:
    fake_tls_api.reply("GET", "/api/v1/query", vector("7"))
    fake_tls_api.reply("GET", "/", {"value": 7})
    query = "up" if type_ == "prometheus" else "$.value"
    with pytest.raises(MetricQueryError, match=r"(?i)certificate"):
        run(provider_for(spec(type_, fake_tls_api.url), None).query(query))
    assert (
        run(provider_for(spec(type_, fake_tls_api.url, insecure_skip_verify=True), None).query(query)) == 7.0
    )


# --- datadog -----------------------------------------------------------------------------------------

DD_SECRET = {"datadog_api_key": "api-key", "datadog_application_key": "app-key"}


def test_datadog_query(fake_api: Any) -> None:
    fake_api.reply("GET", "/api/v1/query", {"status": "ok", "series": [{"pointlist": [[1, 1.5], [2, 2.5]]}]})
    provider = provider_for(spec("datadog", fake_api.url, secret_ref=SECRET), DD_SECRET, interval="2m")
    # The oldest point, as Flagger: the newest bucket of the window is usually incomplete.
    assert run(provider.query("avg:requests{app:podinfo}")) == 1.5
    request = fake_api.last
    assert request.query["query"] == ["avg:requests{app:podinfo}"]
    assert int(request.query["to"][0]) - int(request.query["from"][0]) == 1200
    assert request.headers["dd-api-key"] == "api-key"
    assert request.headers["dd-application-key"] == "app-key"
    fake_api.reply("GET", "/api/v1/query", {"status": "ok", "series": []})
    assert run(provider.query("q")) is None
    fake_api.reply("GET", "/api/v1/query", {"errors": ["Forbidden"]}, status=403)
    with pytest.raises(MetricQueryError, match="403"):
        run(provider.query("q"))


def test_window_accepts_every_metric_interval_the_api_accepts(fake_api: Any) -> None:
    """A Graphite-style interval (``1min``) is a valid metric interval, so a window-based provider
    must size its window from it rather than fail to build."""
    fake_api.reply("GET", "/api/v1/query", {"status": "ok", "series": [{"pointlist": [[1, 4.0]]}]})
    provider = provider_for(spec("datadog", fake_api.url, secret_ref=SECRET), DD_SECRET, interval="1min")
    assert run(provider.query("q")) == 4.0
    assert int(fake_api.last.query["to"][0]) - int(fake_api.last.query["from"][0]) == 600


def test_datadog_validate_and_missing_keys(fake_api: Any) -> None:
    fake_api.reply("GET", "/api/v1/validate", {"valid": True})
    assert run(provider_for(spec("datadog", fake_api.url, secret_ref=SECRET), DD_SECRET).is_online())
    fake_api.reply("GET", "/api/v1/validate", {"errors": ["Forbidden"]}, status=403)
    assert not run(provider_for(spec("datadog", fake_api.url, secret_ref=SECRET), DD_SECRET).is_online())
    with pytest.raises(ProviderConfigError, match="datadog_application_key"):
        provider_for(spec("datadog", fake_api.url, secret_ref=SECRET), {"datadog_api_key": "k"})


# --- new relic ---------------------------------------------------------------------------------------

NR_SECRET = {"newrelic_account_id": "1234", "newrelic_query_key": "nr-key"}


def test_newrelic_query(fake_api: Any) -> None:
    path = "/v1/accounts/1234/query"
    fake_api.reply("GET", path, {"results": [{"result": 1.25}]})
    provider = provider_for(spec("newrelic", fake_api.url, secret_ref=SECRET), NR_SECRET, interval="1m")
    assert run(provider.query("SELECT filter(count(*), WHERE status >= 500) FROM Transaction")) == 1.25
    assert fake_api.last.query["nrql"] == [
        "SELECT filter(count(*), WHERE status >= 500) FROM Transaction SINCE 60 seconds ago"
    ]
    assert fake_api.last.headers["x-query-key"] == "nr-key"
    fake_api.reply("GET", path, {"results": [{"average": 7}]})
    assert run(provider.query("SELECT average(duration) FROM Transaction")) == 7.0
    fake_api.reply("GET", path, {"results": [{"result": None}]})
    assert run(provider.query("q")) is None
    fake_api.reply("GET", path, {"error": "invalid key"}, status=401)
    with pytest.raises(MetricQueryError, match="401"):
        run(provider.query("q"))
    assert run(provider.is_online()) is False


# --- cloudwatch --------------------------------------------------------------------------------------

CW_SECRET = {
    "aws_access_key_id": "AKIDEXAMPLE",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
CW_QUERY = """[
  {"Id": "e1", "Expression": "m1 / m2 * 100", "Label": "ErrorRate"},
  {"Id": "m1", "ReturnData": false,
   "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Errors"}, "Period": 60, "Stat": "Sum"}}
]"""


def test_cloudwatch_get_metric_data_is_signed(fake_api: Any) -> None:
    fake_api.reply(
        "POST", "/", {"MetricDataResults": [{"Id": "e1", "Values": [4.5, 3.0], "StatusCode": "Complete"}]}
    )
    provider = provider_for(
        spec("cloudwatch", fake_api.url, region="eu-west-1", secret_ref=SECRET), CW_SECRET
    )
    assert run(provider.query(CW_QUERY)) == 4.5
    request = fake_api.last
    assert request.headers["x-amz-target"] == "GraniteServiceVersion20100801.GetMetricData"
    assert request.headers["content-type"] == "application/x-amz-json-1.0"
    body = request.json()
    assert body["MetricDataQueries"][0]["Expression"] == "m1 / m2 * 100"
    assert body["EndTime"] - body["StartTime"] == 600
    auth = request.headers["authorization"]
    date = request.headers["x-amz-date"][:8]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date}/eu-west-1/monitoring/aws4_request,"
    )
    # The server side of SigV4: rebuild the canonical request from what arrived and check the signature.
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    text, _ = canonical_request(
        "POST", f"{fake_api.url}/", {h: request.headers[h] for h in signed}, request.body
    )
    scope = f"{date}/eu-west-1/monitoring/aws4_request"
    digest = hashlib.sha256(text.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{request.headers['x-amz-date']}\n{scope}\n{digest}"
    key = signing_key(CW_SECRET["aws_secret_access_key"], date, "eu-west-1", "monitoring")
    assert auth.endswith("Signature=" + hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest())


def test_cloudwatch_no_data_errors_and_availability(fake_api: Any) -> None:
    provider = provider_for(
        spec("cloudwatch", fake_api.url, region="eu-west-1", secret_ref=SECRET), CW_SECRET
    )
    fake_api.reply("POST", "/", {"MetricDataResults": [{"Id": "e1", "Values": []}]})
    assert run(provider.query(CW_QUERY)) is None
    with pytest.raises(MetricQueryError, match="JSON"):
        run(provider.query("not json"))
    fake_api.reply("POST", "/", {"__type": "InvalidParameterValueException"}, status=400)
    assert run(provider.is_online()) is True
    fake_api.reply("POST", "/", {"__type": "AccessDeniedException"}, status=403)
    assert run(provider.is_online()) is False
    with pytest.raises(MetricQueryError, match="403"):
        run(provider.query(CW_QUERY))
    with pytest.raises(ProviderConfigError, match="region"):
        provider_for(spec("cloudwatch", fake_api.url), CW_SECRET)


def test_sigv4_matches_aws_documented_example() -> None:
    """AWS's published example: IAM ListUsers, 20150830T123600Z, us-east-1, AKIDEXAMPLE."""
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    url = "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08"
    key = signing_key(CW_SECRET["aws_secret_access_key"], "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    signed = sign(
        "GET",
        url,
        headers,
        b"",
        Credentials(CW_SECRET["aws_access_key_id"], CW_SECRET["aws_secret_access_key"]),
        "us-east-1",
        "iam",
        datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    text, _ = canonical_request("GET", url, {k: v for k, v in signed.items() if k != "Authorization"}, b"")
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    )
    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


# --- graphite ----------------------------------------------------------------------------------------


def test_graphite_render(fake_api: Any) -> None:
    series = [{"target": "a", "datapoints": [[1.0, 100], [2.0, 160], [None, 220]]}]
    fake_api.reply("GET", "/render", series)
    provider = provider_for(
        spec("graphite", fake_api.url, secret_ref=SECRET), {"username": "g", "password": "pw"}
    )
    assert run(provider.query("target=sumSeries(app.*.errors)&from=-5min")) == 2.0
    request = fake_api.last
    assert request.query == {"target": ["sumSeries(app.*.errors)"], "from": ["-5min"], "format": ["json"]}
    assert request.headers["authorization"] == basic("g", "pw")
    fake_api.reply("GET", "/render", [{"target": "a", "datapoints": [[None, 1]]}])
    assert run(provider.query("target=a")) is None
    assert run(provider.is_online()) is True
    fake_api.reply("GET", "/render", "boom", status=500, content_type="text/plain")
    with pytest.raises(MetricQueryError, match="500"):
        run(provider.query("target=a"))


# --- influxdb ----------------------------------------------------------------------------------------

FLUX_CSV = (
    ",result,table,_start,_stop,_time,_value,_field\r\n"
    ",_result,0,2024-01-01T00:00:00Z,2024-01-01T00:01:00Z,2024-01-01T00:01:00Z,12.5,latency\r\n"
    "\r\n"
)


def test_influxdb_flux_query(fake_api: Any) -> None:
    fake_api.reply("POST", "/api/v2/query", FLUX_CSV, content_type="text/csv")
    provider = provider_for(
        spec("influxdb", fake_api.url, secret_ref=SECRET), {"token": "tok", "org": "acme"}
    )
    flux = 'from(bucket: "app") |> range(start: -1m) |> mean()'
    assert run(provider.query(flux)) == 12.5
    request = fake_api.last
    assert request.query["org"] == ["acme"]
    assert request.headers["authorization"] == "Token tok"
    assert request.json()["query"] == flux and request.json()["type"] == "flux"
    fake_api.reply("POST", "/api/v2/query", "\r\n", content_type="text/csv")
    assert run(provider.query(flux)) is None
    fake_api.reply(
        "POST", "/api/v2/query", ",error,reference\r\n,bad bucket,897\r\n", content_type="text/csv"
    )
    with pytest.raises(MetricQueryError, match="bad bucket"):
        run(provider.query(flux))
    fake_api.reply("POST", "/api/v2/query", {"code": "unauthorized", "message": "no"}, status=401)
    with pytest.raises(MetricQueryError, match="401"):
        run(provider.query(flux))
    fake_api.reply("GET", "/health", {"status": "pass"})
    assert run(provider.is_online()) is True


# --- web ---------------------------------------------------------------------------------------------


def test_web_get_with_jsonpath_and_bearer(fake_api: Any) -> None:
    fake_api.reply("GET", "/", {"data": {"series": [{"value": "0.97"}, {"value": 3}]}})
    provider = provider_for(spec("web", fake_api.url + "/", secret_ref=SECRET), {"token": "abc"})
    assert run(provider.query("$.data.series[0].value")) == 0.97
    assert run(provider.query("data.series[-1]['value']")) == 3.0
    assert fake_api.last.headers["authorization"] == "Bearer abc"
    with pytest.raises(MetricQueryError, match="missing"):
        run(provider.query("$.data.missing"))


def test_web_post_json_body(fake_api: Any) -> None:
    fake_api.reply("POST", "/api/score", {"result": {"score": None}})
    provider = provider_for(spec("web", fake_api.url, headers={"X-Team": ["a", "b"]}), None)
    query = 'path: /api/score\nbody: {service: podinfo, window: "1m"}\njsonPath: $.result.score'
    assert run(provider.query(query)) is None
    request = fake_api.last
    assert request.method == "POST" and request.json() == {"service": "podinfo", "window": "1m"}
    assert request.headers["x-team"] == "a, b"
    fake_api.reply("POST", "/api/score", {"result": {"score": "high"}})
    with pytest.raises(MetricQueryError, match="not a number"):
        run(provider.query(query))
    fake_api.reply("POST", "/api/score", {}, status=502)
    with pytest.raises(MetricQueryError, match="502"):
        run(provider.query(query))


def test_jsonpath_subset() -> None:
    assert parse("$.a.b[0]['c-d'][\"e f\"][-2]") == ["a", "b", 0, "c-d", "e f", -2]
    assert parse("$") == []
    with pytest.raises(ValueError, match="unsupported"):
        parse("$.a[*]")


# --- factory -----------------------------------------------------------------------------------------


def test_unknown_provider_type_is_an_error() -> None:
    with pytest.raises(ProviderConfigError, match="unknown metric provider type 'no-such-provider'"):
        provider_for(
            MetricTemplateProvider.model_construct(type="no-such-provider", address="http://x"), None
        )
    with pytest.raises(ProviderConfigError, match="Secret 'creds'"):
        provider_for(spec("prometheus", "http://x", secret_ref=SECRET), None)
    with pytest.raises(ProviderConfigError, match="not a valid"):
        provider_for(spec("graphite", "graphite:8080"), None)


def test_to_float_keeps_infinity_and_rejects_text() -> None:
    assert to_float("+Inf") == math.inf
    with pytest.raises(MetricQueryError):
        to_float("fast")
