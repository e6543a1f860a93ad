"""`veriflow serve | api | worker | simulator`: the whole service in one process, or its parts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from service import logging as vlogging
from service import settings as settings_module
from service.api.app import build_app
from service.catalog import Catalog
from service.runtime import Runtime, build_runtime, store_options
from service.settings import ConfigError, Settings
from service.simulator.app import Simulator
from service.store.health import wait_for_store

log = structlog.get_logger("veriflow")


def announce(settings: Settings, rt: Runtime) -> None:
    """Say at start-up what the service runs on, and which defaults are not for production."""
    info = rt.store_info
    survives = "state survives a restart" if info.durable else "state does NOT survive a restart"
    log.info("store", store=info.description, durable=info.durable, note=survives)
    print(f"veriflow: store: {info.description}; {survives}", file=sys.stderr, flush=True)  # noqa: T201
    if not settings.api_keys_from_env:
        client, key = settings_module.DEV_CLIENT
        print(f"veriflow: development client {client!r} with API key {key!r} "  # noqa: T201
              "(set VERIFLOW_API_KEYS for real clients)", file=sys.stderr, flush=True)
    if not settings.provider_secret_from_env:
        log.warning("provider_secret.development", hint="set VERIFLOW_PROVIDER_SECRET in production")


def workers_ctx(
    rt: Runtime, *, timers: bool, dispatcher: bool,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run_workers(_: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = []
        if dispatcher:
            await rt.dispatcher.ensure_groups()
            tasks.append(asyncio.create_task(rt.dispatcher.run(stop)))
        if timers:
            tasks.append(asyncio.create_task(rt.timers.run(stop)))
        yield
        stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if dispatcher:
            await rt.dispatcher.retire()
        await rt.close()

    return run_workers


async def serve_app(settings: Settings, *, simulator: bool, api: bool, workers: bool) -> web.Application:
    rt = await build_runtime(settings)
    announce(settings, rt)
    app = build_app(rt, simulator=simulator) if api else web.Application()
    app.cleanup_ctx.append(workers_ctx(rt, timers=workers, dispatcher=workers))
    return app


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="veriflow", description="Phone identity verification service")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "API, timer worker, outbox worker and (by default) the simulator in one process"),
        ("api", "the HTTP API only"),
        ("worker", "the timer and outbox workers only"),
        ("simulator", "the provider simulator only"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--host", default=None)
        command.add_argument("--port", type=int, default=None)
        if name == "serve":
            command.add_argument("--simulator", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    vlogging.configure()
    try:
        settings = settings_module.load()
    except ConfigError as exc:
        print(f"veriflow: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
    host = args.host or settings.host
    port = args.port or settings.port
    if args.port:
        settings = settings_module.with_port(settings, port)
    if args.command == "simulator":
        sim = web.Application()
        sim.add_subapp("/sim", Simulator(Catalog.load(), settings.provider_secret).app())
        web.run_app(sim, host=host, port=port, print=None)
        return
    if settings.redis_url is not None and not asyncio.run(
            wait_for_store(settings.redis_url, store_options(settings), settings.store.connect_timeout_s)):
        raise SystemExit(1)
    if args.command == "worker":
        asyncio.run(run_worker(settings))
        return
    app = serve_app(settings, simulator=args.command == "serve" and args.simulator, api=True,
                    workers=args.command == "serve")
    print(f"veriflow: listening on http://{host}:{port}", file=sys.stderr, flush=True)  # noqa: T201
    web.run_app(app, host=host, port=port, print=None, access_log=None)


async def run_worker(settings: Settings) -> None:
    rt = await build_runtime(settings)
    announce(settings, rt)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal  # noqa: PLC0415

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(rt.dispatcher.run(stop), rt.timers.run(stop))
        await rt.dispatcher.retire()
    finally:
        await rt.close()
