"""The operator console: `/console` serves the static page shipped in this package; the page signs
in with a client's API key (kept in the tab's sessionStorage) and reads, as that client only:

- `GET /v1/console/summary`: live verifications by channel and state, outcomes of the last hour by
  catalog code with their Korean and English messages;
- `GET /v1/console/verifications?q=<id or tx_id>`: the matching verifications, each with its audit
  trail and its channel's state diagram (the README's Mermaid) with the states it went through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from machines.channels import MACHINES
from machines.diagram import mermaid
from machines.events import Event, Tick
from machines.record import Verification
from machines.vocabulary import Channel
from service.api.audit import event_view
from service.api.context import CLIENT_ID, runtime
from service.errors import UnknownVerificationError, invalid
from service.jsonio import json_response
from service.runtime import Runtime
from service.store.console import ConsoleReads
from service.views import rfc3339, verification_view

STATIC = Path(__file__).resolve().parent / "static"
MAX_QUERY = 128
# The page and its scripts come from this service only; Mermaid styles its SVG inline.
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DIAGRAMS = {channel: mermaid(machine) for channel, machine in MACHINES.items()}

routes = web.RouteTableDef()


async def page(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


def add_console(app: web.Application) -> None:
    app.router.add_get("/console", page)
    app.router.add_static("/console/static", STATIC, append_version=False)
    app.router.add_routes(routes)


@routes.get("/v1/console/summary")
async def summary(request: web.Request) -> web.Response:
    rt = runtime(request)
    client_id = request[CLIENT_ID]
    reads = ConsoleReads(rt.store)
    now = rt.clock.now_ms()
    live = await reads.live(client_id)
    since, outcomes = await reads.outcomes(client_id, now)
    live_rows = []
    for name, count in sorted(live.items()):
        channel, state = name.split("|", 1)
        status = MACHINES[Channel(channel)].statuses.get(state)
        live_rows.append({"channel": channel, "state": state, "status": status.value if status else None,
                          "count": count})
    outcome_rows = []
    for name, count in sorted(outcomes.items(), key=lambda item: (-item[1], item[0])):
        channel, ended, code = name.split("|", 2)
        outcome_rows.append({"channel": channel, "status": ended, "code": code or None, "count": count,
                             "messages": messages(rt, code)})
    return json_response({
        "client_id": client_id,
        "live": {"total": sum(live.values()), "by_state": live_rows},
        "outcomes": {"since": rfc3339(since), "until": rfc3339(now), "by_code": outcome_rows},
    })


def messages(rt: Runtime, code: str) -> dict[str, str] | None:
    if not code or code not in rt.catalog:
        return None
    entry = rt.catalog.get(code)
    return {"ko": entry.messages.get("ko", ""), "en": entry.messages.get("en", "")}


@routes.get("/v1/console/verifications")
async def search(request: web.Request) -> web.Response:
    rt = runtime(request)
    client_id = request[CLIENT_ID]
    query = request.query.get("q", "").strip()
    if not query or len(query) > MAX_QUERY:
        raise invalid(f"q must be a verification id or a tx_id of 1 to {MAX_QUERY} characters")
    reads = ConsoleReads(rt.store)
    ids = [query] if rt.store.keys.shard_of_id(query) is not None else []
    ids += [found for found in await reads.by_tx_id(client_id, query) if found not in ids]
    results = []
    for verification_id in ids:
        found = await current(rt, verification_id, client_id)
        if found is not None:
            events = [event_view(event) for event in await reads.events(verification_id)]
            results.append(detail(found, events))
    results.sort(key=lambda item: str(item["verification"]["created_at"]), reverse=True)
    return json_response({"query": query, "results": results})


async def current(rt: Runtime, verification_id: str, client_id: str) -> Verification | None:
    """The client's verification, its due deadlines applied (as any read does), or None."""

    async def tick(_: Verification) -> Event:
        return Tick(rt.clock.now_ms())

    try:
        return (await rt.transactor.apply(verification_id, tick, client_id=client_id)).record
    except UnknownVerificationError:
        return None


def detail(record: Verification, events: list[dict[str, Any]]) -> dict[str, Any]:
    view = verification_view(record, None)  # no key token, no ARS digits: the operator needs neither
    view.pop("display_code", None)
    visited = [event["to"] for event in events]
    if events and events[0]["from"] is None:
        visited.insert(0, "new")
    path = [[event["from"] or "new", event["to"]] for event in events if event["from"] != event["to"]]
    return {"verification": view, "events": events,
            "diagram": {"channel": record.channel.value, "mermaid": DIAGRAMS[record.channel],
                        "visited": list(dict.fromkeys(visited)), "path": path,
                        "edges": edges_taken(DIAGRAMS[record.channel], events, ended=not record.is_live)}}


def edges_taken(diagram: str, events: list[dict[str, Any]], *, ended: bool) -> list[int]:
    """The diagram's edges (numbered in the order Mermaid draws them) that the events went along:
    for each state change, the edge of its trigger (the one naming the emitted code, when several
    do); the start edge for the creation, and the final edge of a finished verification."""
    edges = [line.strip() for line in diagram.splitlines() if " --> " in line]
    taken: list[int] = []

    def take(source: str, dest: str, trigger: str | None = None, code: str | None = None) -> None:
        head = f"{source} --> {dest}"
        found = [n for n, edge in enumerate(edges) if edge == head or (
            trigger is not None and (edge == f"{head}: {trigger}" or edge.startswith(f"{head}: {trigger} ")))]
        named = [n for n in found if code and code in edges[n]]
        if found:
            taken.append((named or found)[0])

    if events and events[0]["from"] is None:
        take("[*]", "new")
    for event in events:
        if event["from"] != event["to"]:
            take(event["from"] or "new", event["to"], event["trigger"], event["code"])
    if ended and events:
        take(events[-1]["to"], "[*]")
    return list(dict.fromkeys(taken))
