"""Only the service may use the simulator's provider side: each request it sends is signed with
the simulator's provider secret (`X-Veriflow-Signature`, as the provider events are). An unsigned
or mis-signed request, or one that names a `webhook` of its own, is refused and changes nothing,
so nobody else can have the simulator place a call, send a push or sign an event."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from service import signing
from service.jsonio import json_response

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.Response]]


def signed(secret: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`handler(request, body)`, called only for a body signed with `secret`."""

    async def check(request: web.Request) -> web.Response:
        raw = await request.read()
        if not signing.verify(secret, raw, request.headers.get(signing.HEADER), time.time()):
            return json_response({"error": "not signed by the service"}, status=401)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, status=400)
        if "webhook" in body:
            return json_response({"error": "the simulator reports only to its configured webhook"}, status=400)
        return await handler(request, body)

    return check
