"""`veriflow serve | api | worker | simulator`: the whole service in one process, or its parts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from service import logging as vlogging
from service import settings as settings_module
from service.api.app import build_app
from service.api.context import RUNTIME
from service.catalog import Catalog
from service.providers.wiring import simulator_webhook
from service.runtime import Runtime, build_runtime, store_options
from service.settings import ConfigError, Settings
from service.simulator.app import Simulator
from service.startup import heap
from service.startup.forking import run_forked
from service.startup.safety import refuse_unsafe
from service.startup.serving import StartupError, run_until_stopped
from service.store.health import wait_for_store

log = structlog.get_logger("veriflow")
MAX_PROCESSES = 64


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
    rt = await build_runtime(settings, simulator_mounted=simulator)
    announce(settings, rt)
    app = build_app(rt, simulator=simulator) if api else web.Application()
    app.cleanup_ctx.append(workers_ctx(rt, timers=workers, dispatcher=workers))
    return app


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="veriflow", description="Phone identity verification service",
        epilog="Environment: VERIFLOW_REDIS_URL, VERIFLOW_CONFIG, VERIFLOW_API_KEYS, VERIFLOW_SECRET_KEY, "
               "VERIFLOW_PROVIDER_SECRET[_<ID>], VERIFLOW_WEBHOOK_URL, VERIFLOW_SIMULATOR_URL and the "
               "providers' credentials (README, Running it for real).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "API, timer worker, outbox worker and (on the embedded store) the simulator in one process"),
        ("api", "the HTTP API only"),
        ("worker", "the timer and outbox workers only"),
        ("simulator", "the provider simulator only (a development tool)"),
    ):
        command = commands.add_parser(name, help=text, description=text, epilog=parser.epilog)
        if name != "worker":
            command.add_argument("--host", default=None,
                                 help="address to listen on (default: server.host of the configuration, 127.0.0.1)")
            command.add_argument("--port", type=int, default=None,
                                 help="port to listen on (default: server.port of the configuration, 8080)")
        else:
            command.set_defaults(host=None, port=None)
        if name in {"serve", "api"}:
            command.add_argument("--reuse-port", action="store_true",
                                 help="share the port with other veriflow processes (SO_REUSEPORT)")
            command.add_argument("--workers", type=int, default=1, metavar="N",
                                 help="run N processes on the one port (SO_REUSEPORT; needs VERIFLOW_REDIS_URL, "
                                      "and no simulator); SIGTERM drains them all")
        if name == "serve":
            command.add_argument(
                "--simulator", action=argparse.BooleanOptionalAction, default=None,
                help="mount the provider simulator under /sim (a development tool: unauthenticated "
                     "routes that read codes and answer pushes). Default: on with the embedded store, "
                     "off when VERIFLOW_REDIS_URL is set")
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
    if args.command == "simulator":
        webhook = simulator_webhook(settings)  # where the service it plays for listens
        sim = web.Application()
        sim.add_subapp("/sim", Simulator(Catalog.load(), settings.provider_secret, webhook).app())
        web.run_app(sim, host=host, port=port, print=None)
        return
    if args.port:
        settings = settings_module.with_port(settings, port)
    simulator = args.command == "serve" and (
        args.simulator if args.simulator is not None else settings.redis_url is None)
    problem = refuse_unsafe(settings, simulator_mounted=simulator)
    if problem is not None:
        print(f"veriflow: refusing to start: {problem}", file=sys.stderr, flush=True)  # noqa: T201
        raise SystemExit(2)
    if settings.redis_url is not None and not asyncio.run(
            wait_for_store(settings.redis_url, store_options(settings), settings.store.connect_timeout_s)):
        raise SystemExit(1)
    processes = getattr(args, "workers", 1)
    if processes != 1:
        raise SystemExit(serve_forked(settings, host, port, processes, simulator=simulator,
                                      workers=args.command == "serve"))
    try:
        if args.command == "worker":
            asyncio.run(run_worker(settings))
        else:
            asyncio.run(run_server(settings, host, port, simulator=simulator, workers=args.command == "serve",
                                   reuse_port=args.reuse_port))
    except (StartupError, ConfigError) as exc:
        print(f"veriflow: cannot start: {exc}", file=sys.stderr, flush=True)  # noqa: T201
        raise SystemExit(1) from None
    except (RedisError, OSError) as exc:
        print(f"veriflow: the store is unreachable ({exc.__class__.__name__}: {exc})",  # noqa: T201
              file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def serve_forked(settings: Settings, host: str, port: int, count: int, *, simulator: bool, workers: bool) -> int:
    """`count` processes on one port. Each keeps its state in the shared store, so the embedded
    store (one per process) and the simulator (its memory is per process) cannot be spread."""
    if settings.redis_url is None or simulator:
        print("veriflow: refusing to start: --workers needs VERIFLOW_REDIS_URL and no --simulator "  # noqa: T201
              "(each process would keep its own state)", file=sys.stderr, flush=True)
        return 2
    if not 1 < count <= MAX_PROCESSES:
        print(f"veriflow: refusing to start: --workers is 1 to {MAX_PROCESSES}", file=sys.stderr, flush=True)  # noqa: T201
        return 2

    def serve_one() -> None:
        try:
            asyncio.run(run_server(settings, host, port, simulator=False, workers=workers, reuse_port=True))
        except (StartupError, ConfigError, RedisError, OSError) as exc:
            print(f"veriflow: cannot start: {exc}", file=sys.stderr, flush=True)  # noqa: T201
            raise SystemExit(1) from None

    return run_forked(count, serve_one)


async def run_server(settings: Settings, host: str, port: int, *, simulator: bool, workers: bool,
                     reuse_port: bool = False) -> None:
    app = await serve_app(settings, simulator=simulator, api=True, workers=workers)
    try:
        await run_until_stopped(app, host, port, app[RUNTIME].store.ping, reuse_port=reuse_port,
                                catalog=app[RUNTIME].catalog)
    except BaseException:
        await app[RUNTIME].close()  # a start-up that failed before the workers' clean-up could
        raise


async def run_worker(settings: Settings) -> None:
    rt = await build_runtime(settings)
    announce(settings, rt)
    heap.settle()
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
