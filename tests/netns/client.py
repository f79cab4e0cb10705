"""A client process for the namespace suite, run inside a pod; prints one JSON line.

``python -m tests.netns.client KIND ...``; names resolve through the pod's hosts file, as
``http://<service>`` would through cluster DNS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import ssl
import time
from collections import Counter
from typing import Any

import aiohttp

# gRPC's own DNS resolver (c-ares) does not read the hosts file that names the services here.
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
import grpc

from canaryctl_mesh.loopback import HttpConnection, fire

TIMEOUT = 30.0


async def http(args: argparse.Namespace) -> dict[str, Any]:
    """`count` GETs of `path` over keep-alive connections, statuses and bodies counted."""
    headers = dict(h.split(":", 1) for h in args.header)
    if args.path == "/":
        result = await fire(
            args.host, args.port, args.count, args.concurrency, headers=headers, timeout=TIMEOUT
        )
        return {"statuses": result.statuses, "bodies": result.bodies, "errors": result.errors}
    connection = HttpConnection(args.host, args.port)
    statuses: Counter[int] = Counter()
    try:
        for _ in range(args.count):
            statuses[(await asyncio.wait_for(connection.request(args.path, headers), TIMEOUT))[0]] += 1
    finally:
        await connection.close()
    return {"statuses": statuses}


async def get(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(args.url) as response:
            body = await response.text()
            return {"status": response.status, "body": body, "seconds": time.monotonic() - began}
    except (aiohttp.ClientError, TimeoutError) as error:
        return {"status": 0, "body": repr(error), "seconds": time.monotonic() - began}


async def websocket(args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(args.url) as ws:
        replies = []
        for message in args.messages:
            await ws.send_str(message)
            replies.append((await ws.receive(timeout=TIMEOUT)).data)
        return {"replies": replies}


def _connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def tcp(args: argparse.Namespace) -> dict[str, Any]:
    """Send bytes (hex) and read the echo: what arrives must be exactly what was sent."""
    payload = bytes.fromhex(args.send)
    with _connect(args.host, args.port) as sock:
        sock.sendall(payload)
        return {"received": _read_exactly(sock, len(payload)).hex()}


def banner(args: argparse.Namespace) -> dict[str, Any]:
    """Connect and wait for the server to speak first, without sending anything."""
    began = time.monotonic()
    with _connect(args.host, args.port) as sock:
        line = sock.makefile("rb").readline()
    return {"banner": line.decode(errors="replace").strip(), "seconds": time.monotonic() - began}


def tls(args: argparse.Namespace) -> dict[str, Any]:
    """A TLS handshake: the certificate seen must be the app's own (the mesh does not terminate TLS)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    payload = os.urandom(64)
    with _connect(args.host, args.port) as raw, context.wrap_socket(raw, server_hostname=args.host) as sock:
        certificate = sock.getpeercert(binary_form=True) or b""
        sock.sendall(payload)
        echoed = _read_exactly(sock, len(payload)) == payload
    return {"sha256": hashlib.sha256(certificate).hexdigest(), "echoed": echoed}


def grpc_calls(args: argparse.Namespace) -> dict[str, Any]:
    """`count` unary calls on one channel (one HTTP/2 connection): replies and status codes counted."""
    replies: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(args.target) as channel:
        call = channel.unary_unary("/test.Echo/Call")
        for _ in range(args.count):
            try:
                replies[call(args.payload.encode(), timeout=TIMEOUT).decode()] += 1
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
    return {"codes": codes, "replies": replies}


def main() -> None:
    parser = argparse.ArgumentParser()
    kinds = parser.add_subparsers(dest="kind", required=True)
    load = kinds.add_parser("http")
    load.add_argument("host")
    load.add_argument("port", type=int)
    load.add_argument("--count", type=int, default=100)
    load.add_argument("--concurrency", type=int, default=4)
    load.add_argument("--header", action="append", default=[])
    load.add_argument("--path", default="/")
    one = kinds.add_parser("get")
    one.add_argument("url")
    one.add_argument("--timeout", type=float, default=TIMEOUT)
    ws = kinds.add_parser("ws")
    ws.add_argument("url")
    ws.add_argument("messages", nargs="+")
    for name in ("tcp", "banner", "tls"):
        raw = kinds.add_parser(name)
        raw.add_argument("host")
        raw.add_argument("port", type=int)
        raw.add_argument("--send", default="")
    call = kinds.add_parser("grpc")
    call.add_argument("target")
    call.add_argument("payload")
    call.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    handlers: dict[str, Any] = {"tcp": tcp, "banner": banner, "tls": tls, "grpc": grpc_calls}
    if args.kind in handlers:
        result = handlers[args.kind](args)
    else:
        result = asyncio.run({"http": http, "get": get, "ws": websocket}[args.kind](args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
