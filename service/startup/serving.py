"""Running an aiohttp application until SIGINT or SIGTERM, saying "listening on" only once the
port is bound and the store answers; a start-up failure is one line, not a traceback."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.api.protocol import EnvelopedRunner
from service.catalog import Catalog
from service.startup import heap


class StartupError(RuntimeError):
    """The process cannot start; the message is the one line it prints."""


async def run_until_stopped(app: web.Application, host: str, port: int,
                            store_answers: Callable[[], Awaitable[bool]] | None, *, reuse_port: bool = False,
                            catalog: Catalog | None = None) -> None:
    runner = EnvelopedRunner(app, catalog or Catalog.load(), access_log=None)
    await runner.setup()  # the start-up hooks (the workers' consumer groups) run here
    try:
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        except OSError as exc:
            msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise StartupError(msg) from None
        if store_answers is not None and not await store_answers():
            msg = "the store does not answer"
            raise StartupError(msg)
        heap.settle()
        print(f"veriflow: listening on http://{host}:{port}", file=sys.stderr, flush=True)  # noqa: T201
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
