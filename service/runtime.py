"""The running service's parts, wired once: store, engine, providers, workers."""

from __future__ import annotations

import secrets as pysecrets
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from service.call_effects import CallAndPushEffects
from service.callbacks import callback_session
from service.catalog import Catalog
from service.clock import Clock, SystemClock
from service.crypto import Secrets
from service.engine import Engine
from service.keys import SERVICE_KEY, Keys
from service.metrics import Metrics
from service.outbox import Dispatcher
from service.providers.simulator_calls import SimulatorUpstreams
from service.settings import Settings
from service.store import Store, StoreInfo, connect
from service.timers import TimerWorker

log = structlog.get_logger("veriflow")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    store_info: StoreInfo
    engine: Engine
    secrets: Secrets
    catalog: Catalog
    metrics: Metrics
    clock: Clock
    http: aiohttp.ClientSession
    provider: SimulatorUpstreams
    timers: TimerWorker
    dispatcher: Dispatcher
    extras: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        await self.http.close()
        await self.dispatcher.http.close()
        await self.store.redis.aclose()


async def service_key(client: Any, configured: str | None) -> bytes:
    """VERIFLOW_SECRET_KEY, or a development key made once and kept in the store (so a restart
    still accepts the codes already sent)."""
    if configured:
        return configured.encode()
    await client.set(SERVICE_KEY, pysecrets.token_hex(32), nx=True)
    log.warning("secret_key.development", hint="set VERIFLOW_SECRET_KEY in production")
    return bytes(await client.get(SERVICE_KEY))


async def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    client: Any = None,
    store_info: StoreInfo | None = None,
    simulator_url: str | None = None,
) -> Runtime:
    if client is None:
        client, store_info = connect(settings.redis_url)
    assert store_info is not None  # noqa: S101 - given together with the client
    clock = clock or SystemClock()
    keys = Keys(settings.shards)
    store = Store(client, keys)
    secret = Secrets(await service_key(client, settings.secret_key))
    metrics = Metrics()
    engine = Engine(store, settings, secret, clock, metrics)
    http = aiohttp.ClientSession()
    base = simulator_url or settings.simulator_url or f"http://127.0.0.1:{settings.port}/sim"
    provider = SimulatorUpstreams(base, http, settings.provider_timeout_s)
    provider.webhook_url = (settings.webhook_url
                            or f"http://127.0.0.1:{settings.port}/v1/providers/simulator/events")
    consumer = f"{socket.gethostname()}-{pysecrets.token_hex(4)}"
    callbacks = callback_session(allow_private=settings.allow_private_callbacks)
    dispatcher = Dispatcher(store, settings, secret, provider, callbacks, metrics, consumer)
    CallAndPushEffects(store, settings, secret, provider, provider).register(dispatcher)
    return Runtime(
        settings=settings,
        store=store,
        store_info=store_info,
        engine=engine,
        secrets=secret,
        catalog=Catalog.load(),
        metrics=metrics,
        clock=clock,
        http=http,
        provider=provider,
        timers=TimerWorker(engine, clock, metrics),
        dispatcher=dispatcher,
    )
