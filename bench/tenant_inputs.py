"""What three tenant inputs cost the controller: an external metrics value of 8,000 digits, a Cloud
Monitoring template with a 4,096-bit key queried 8 times, and a tenant naming 2,000 metrics addresses.

Everything runs in this process on loopback (a recording HTTP server for Cloud Monitoring); the
addresses of the last part are never connected to. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import time
import tracemalloc

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from canaryctl_providers.metrics import MetricQueryError, provider_for
from canaryctl_providers.metrics.externalmetrics import _QUANTITY, parse_quantity
from canaryctl_providers.outbound import close_shared_clients, shared_client, shared_clients
from tests.loop_stalls import loop_stalls
from tests.providers.metrics.conftest import _serve_fake_api
from tests.providers.metrics.test_metrics_stackdriver import MQL, QUERY_PATH, answer, secret_for, stackdriver


def quantity(digits: int) -> dict[str, float]:
    value = "1" * digits + "x"
    started = time.perf_counter()
    with contextlib.suppress(MetricQueryError):
        parse_quantity(value)
    refused = time.perf_counter() - started
    started = time.perf_counter()
    _QUANTITY.fullmatch(value)
    pattern = time.perf_counter() - started
    return {"quantity_refused_s": round(refused, 6), "quantity_pattern_s": round(pattern, 6)}


async def stackdriver_stall(key: rsa.RSAPrivateKey, queries: int) -> float:
    api, server = _serve_fake_api()
    api.reply("POST", QUERY_PATH, answer({"doubleValue": 1.0}))
    try:
        async with loop_stalls(0.002, settle=0.01) as stalls:
            for _ in range(queries):  # a provider per query, as the analyzer builds them
                await provider_for(stackdriver(api.url), secret_for(key)).query(MQL)
    finally:
        await close_shared_clients()
        server.shutdown()
        server.server_close()
    return max(stalls)


async def addresses(count: int) -> dict[str, float]:
    """Clients kept and memory held after ``count`` distinct addresses, against after 500."""
    tracemalloc.start()
    held_at = {}
    for index in range(count):
        async with shared_client(f"http://10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}:9090"):
            pass
        if index + 1 in (500, count):
            await asyncio.sleep(0.05)  # evicted clients close
            gc.collect()
            held_at[index + 1] = tracemalloc.get_traced_memory()[0]
    kept = shared_clients()
    await close_shared_clients()
    tracemalloc.stop()
    growth = (held_at[count] - held_at[500]) / 1024 / (count - 500)
    return {"addresses": count, "clients_kept": kept, "kib_per_address_beyond_500": round(growth, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digits", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--addresses", type=int, default=2000)
    args = parser.parse_args()
    result: dict[str, object] = {"digits": args.digits, **quantity(args.digits)}
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    started = time.perf_counter()
    serialization.load_pem_private_key(pem, None)
    result["stackdriver_checked_key_load_s"] = round(time.perf_counter() - started, 4)
    result["stackdriver_queries"] = args.queries
    result["stackdriver_loop_stall_max_s"] = round(asyncio.run(stackdriver_stall(key, args.queries)), 4)
    result.update(asyncio.run(addresses(args.addresses)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
