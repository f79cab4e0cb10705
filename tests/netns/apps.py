"""An app container for the namespace suite: one process serving each protocol the mesh must carry.

``python -m tests.netns.apps --name NAME [--http PORT] [--echo PORT]... [--banner PORT]...
[--tls PORT --cert FILE --key FILE] [--grpc PORT]`` prints "listening" once every port is bound.

- http: ``/`` answers NAME; ``/peer`` answers NAME and the X-Forwarded-Client-Cert header the sidecar
  set (the caller's certificate), "NAME none" without one; ``/status/<code>`` answers that status;
  ``/slow/<seconds>`` answers after that long; ``/ws`` is a WebSocket answering ``NAME:<message>``;
  ``/_stats`` counts requests and the mirrored copies (their Host ends in ``-shadow``).
- echo: raw TCP, every byte sent back unchanged (what a database protocol needs from the mesh).
- banner: server-first, like SMTP: ``220 NAME`` on connect, then echo.
- tls: TLS with the given certificate, then echo.
- grpc: unary ``/test.Echo/Call`` answering NAME, or status UNAVAILABLE for the payload ``fail``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from collections import Counter

import grpc
from aiohttp import WSMsgType, web

MAX_SLOW_SECONDS = 60.0


def http_app(name: str, counts: Counter[str]) -> web.Application:
    async def root(request: web.Request) -> web.Response:
        counts["shadow" if request.host.split(":")[0].endswith("-shadow") else "requests"] += 1
        return web.Response(text=name)

    async def peer(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} {request.headers.get('x-forwarded-client-cert', 'none')}")

    async def status(request: web.Request) -> web.Response:
        counts["requests"] += 1
        return web.Response(status=int(request.match_info["code"]), text=name)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(min(float(request.match_info["seconds"]), MAX_SLOW_SECONDS))
        return web.Response(text=name)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await socket.send_str(f"{name}:{message.data}")
        return socket

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(counts))

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/peer", peer)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow/{seconds}", slow)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/_stats", stats)
    return app


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until the reader ends, then close the writer; with one connection's ends, an echo."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


echo = pipe


def banner(name: str) -> object:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"220 {name}\r\n".encode())
        await writer.drain()
        await echo(reader, writer)

    return serve


def grpc_server(name: str, port: int) -> grpc.aio.Server:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "asked to fail")
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    return server


async def main(args: argparse.Namespace) -> None:
    counts: Counter[str] = Counter()
    if args.http:
        runner = web.AppRunner(http_app(args.name, counts), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", args.http).start()
    for port in args.echo:
        await asyncio.start_server(echo, "0.0.0.0", port)
    for port in args.banner:
        await asyncio.start_server(banner(args.name), "0.0.0.0", port)  # type: ignore[arg-type]
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        await asyncio.start_server(echo, "0.0.0.0", args.tls, ssl=context)
    if args.grpc:
        grpc_app = grpc_server(args.name, args.grpc)  # referenced until exit: a collected server stops
        await grpc_app.start()
    print("listening", json.dumps(vars(args)), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    for protocol in ("http", "tls", "grpc"):
        parser.add_argument(f"--{protocol}", type=int, default=0)
    for protocol in ("echo", "banner"):
        parser.add_argument(f"--{protocol}", type=int, action="append", default=[])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    asyncio.run(main(parser.parse_args()))
