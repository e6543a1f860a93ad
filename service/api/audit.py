"""`GET /v1/verifications/{id}/events`: the audit trail (contract section 10).

The read first lets the clock catch up, as `GET /v1/verifications/{id}` does, so an expiry that is
due appears (actor `timer`) before it is listed. Another client's verification is unknown (4001).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from machines.events import Event, Tick
from machines.record import Verification
from machines.vocabulary import Code
from service.api.context import runtime
from service.api.verifications import transition
from service.jsonio import json_response
from service.store.console import ConsoleReads
from service.views import rfc3339

routes = web.RouteTableDef()


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "at": rfc3339(event["at"])}


async def read_events(request: web.Request) -> tuple[Verification, list[dict[str, Any]]]:
    """The caller's verification named in the path, brought up to date, and its events."""
    rt = runtime(request)

    async def tick(_: Verification) -> Event:
        return Tick(rt.clock.now_ms())

    decision = await transition(request, tick, Code.UNKNOWN_VERIFICATION)
    events = await ConsoleReads(rt.store).events(decision.record.id)
    return decision.record, [event_view(event) for event in events]


@routes.get("/v1/verifications/{id}/events")
async def verification_events(request: web.Request) -> web.Response:
    _, events = await read_events(request)
    return json_response({"events": events})
