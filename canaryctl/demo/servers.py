"""In-process HTTP servers on ephemeral loopback ports: the demo's apps, load tester and Slack receiver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class LocalServer:
    app: web.Application
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> LocalServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class SlackReceiver:
    """Accepts what Slack's incoming webhooks accept and keeps it, as Slack would show it."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    def build_app(self) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            body = await request.json()
            if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
                return web.Response(status=400, text="no_text")
            self.messages.append(body)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        return app

    def texts(self) -> list[str]:
        return [str(message.get("text", "")) for message in self.messages]
