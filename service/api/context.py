"""What every handler shares: the runtime, the calling client, the JSON body, rendering a decision."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from machines.core import Decision
from machines.vocabulary import Code
from service.api import validation
from service.errors import ApiError, invalid
from service.jsonio import json_response
from service.runtime import Runtime
from service.views import verification_view

RUNTIME = web.AppKey("runtime", Runtime)
CLIENTS = web.AppKey("clients", dict[bytes, str])  # SHA-256 of an API key -> client id
CLIENT_ID = web.RequestKey("client_id", str)


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    return validation.object_body(body)


def render(rt: Runtime, decision: Decision, success_status: int = 200) -> web.Response:
    """The verification as the decision left it, or the error envelope carrying it."""
    view = verification_view(decision.record, rt.secrets)
    reply = decision.reply
    if reply.ok:
        return json_response(view, status=success_status)
    raise ApiError(reply.code or Code.INTERNAL_ERROR, http_status=reply.http_status,
                   detail_code=reply.detail_code, verification=view, variant=reply.variant)
