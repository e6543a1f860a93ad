"""Assembling the aiohttp application: routes, middlewares, health, metrics, the simulator."""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import audit, middleware, providers, verifications
from service.api.context import CLIENTS, RUNTIME
from service.api.openapi import openapi_document
from service.console.routes import add_console
from service.jsonio import json_response
from service.motp import routes as motp_routes
from service.providers.wiring import simulator_webhook
from service.runtime import Runtime
from service.simulator.app import SIMULATOR, Simulator


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        ready = await request.app[RUNTIME].store.ping()
    except Exception:  # noqa: BLE001 - any store failure means not ready
        ready = False
    return json_response({"status": "ready" if ready else "unavailable"}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    rt.metrics.live.set(await rt.store.count_timers())
    rt.metrics.outbox_pending.set(await rt.dispatcher.pending_count())
    body = generate_latest(rt.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(openapi_document(request.app)), content_type="application/json")


def build_app(rt: Runtime, *, simulator: bool) -> web.Application:
    app = web.Application(
        middlewares=[middleware.api_request],
        client_max_size=64 * 1024,
    )
    app[RUNTIME] = rt
    app[CLIENTS] = middleware.client_table(dict(rt.settings.api_keys))
    app.router.add_routes(verifications.routes)
    app.router.add_routes(motp_routes.routes)
    app.router.add_routes(providers.routes)
    app.router.add_routes(audit.routes)
    add_console(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    if simulator:
        sim = app[SIMULATOR] = Simulator(rt.catalog, rt.settings.provider_secret, simulator_webhook(rt.settings))
        app.add_subapp("/sim", sim.app())
    return app
