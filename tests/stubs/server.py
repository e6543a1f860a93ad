"""What the stubs share: a loopback aiohttp server on a free port, a record of every request as
it arrived, the samples, and the knobs that make an answer slow, fail or come out garbled."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample(provider: str, name: str) -> Any:
    """A recorded answer body from tests/samples/<provider>/<name>.json."""
    return json.loads((SAMPLES / provider / f"{name}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the stub received it."""

    route: str
    method: str
    path: str
    headers: dict[str, str]
    content_type: str
    raw: bytes
    body: Any  # parsed JSON or form (a dict), or None when it was neither


@dataclass(frozen=True, slots=True)
class Canned:
    """An answer that replaces the stub's own: a sample by name, or raw text (a malformed body)."""

    status: int
    sample: str | None = None
    text: str | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Knobs:
    delay_s: dict[str, float] = field(default_factory=dict)  # route -> seconds before answering
    canned: dict[str, Canned] = field(default_factory=dict)  # route -> the answer it gives instead


class StubServer:
    """Start with `async with`; `base_url` is then http://127.0.0.1:<port>."""

    provider = ""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.knobs = Knobs()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])  # the port the system chose for port 0
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._released.set()  # slow handlers answer at once
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def on(self, route: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.route == route]

    async def record(self, route: str, request: web.Request, body: Any) -> Seen:
        raw = await request.read()
        seen = Seen(route, request.method, request.path, dict(request.headers),
                    request.content_type, raw, body)
        self.seen.append(seen)
        return seen

    async def pause(self, route: str) -> None:
        delay = self.knobs.delay_s.get(route)
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), delay)

    def canned(self, route: str, **fill: str) -> web.Response | None:
        answer = self.knobs.canned.get(route)
        if answer is None:
            return None
        if answer.text is not None:
            return web.Response(status=answer.status, text=answer.text, content_type=answer.content_type)
        return self.answer(answer.status, str(answer.sample), **fill)

    def answer(self, status: int, name: str, **fill: str) -> web.Response:
        """The sample `name`, its {placeholders} filled, with `status`."""
        text = json.dumps(sample(self.provider, name), ensure_ascii=False)
        for key, value in fill.items():
            text = text.replace("{" + key + "}", value)
        return web.Response(status=status, text=text, content_type="application/json")
