"""The running service's parts, wired once: store, transactor, providers, effects, workers."""

from __future__ import annotations

import secrets as pysecrets
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from service.catalog import Catalog
from service.clock import Clock, SystemClock
from service.crypto import Secrets
from service.effects.callbacks import Callbacks, callback_session
from service.effects.dispatcher import Dispatcher, registry
from service.effects.handlers import ProviderEffects
from service.metrics import Metrics
from service.providers.ports import Providers
from service.providers.simulator import SimulatorClient
from service.settings import Settings
from service.store.client import StoreInfo, StoreOptions, connect
from service.store.keys import Keys
from service.store.outbox import OutboxStreams
from service.store.store import Store
from service.timers import TimerWorker
from service.transactor import Transactor

log = structlog.get_logger("veriflow")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    store_info: StoreInfo
    transactor: Transactor
    secrets: Secrets
    catalog: Catalog
    metrics: Metrics
    clock: Clock
    http: aiohttp.ClientSession
    providers: Providers
    callbacks: Callbacks
    timers: TimerWorker
    dispatcher: Dispatcher

    async def close(self) -> None:
        await self.http.close()
        await self.callbacks.close()
        await self.store.redis.aclose()


async def service_key(store: Store, configured: str | None) -> bytes:
    """VERIFLOW_SECRET_KEY, or a development key made once and kept in the store (so a restart
    still accepts the codes already sent)."""
    if configured:
        return configured.encode()
    log.warning("secret_key.development", hint="set VERIFLOW_SECRET_KEY in production")
    return await store.development_key()


def simulator_providers(settings: Settings, http: aiohttp.ClientSession, simulator_url: str | None) -> Providers:
    base = simulator_url or settings.simulator_url or f"http://127.0.0.1:{settings.port}/sim"
    webhook = settings.webhook_url or f"http://127.0.0.1:{settings.port}/v1/providers/simulator/events"
    client = SimulatorClient(base, http, settings.provider_timeout_s, webhook)
    return Providers(carriers=client, sms=client, calls=client, pushes=client)


def store_options(settings: Settings) -> StoreOptions:
    """The store client's timeouts: a blocking outbox read must fit within one command's wait."""
    timeout_s = max(settings.store.socket_timeout_s, settings.outbox_block_ms / 1000 + 1)
    return StoreOptions(socket_timeout_s=timeout_s, connect_timeout_s=min(timeout_s, 1.0))


async def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    client: Any = None,
    store_info: StoreInfo | None = None,
    simulator_url: str | None = None,
) -> Runtime:
    if client is None:
        client, store_info = connect(settings.redis_url, store_options(settings))
    assert store_info is not None  # noqa: S101 - given together with the client
    clock = clock or SystemClock()
    keys = Keys(settings.shards)
    store = Store(client, keys)
    secret = Secrets(await service_key(store, settings.secret_key))
    metrics = Metrics()
    http = aiohttp.ClientSession()
    providers = simulator_providers(settings, http, simulator_url)
    callbacks = Callbacks(settings, secret, callback_session(allow_private=settings.allow_private_callbacks))
    provider_effects = ProviderEffects(store, settings, secret, providers.sms, providers.calls, providers.pushes)
    consumer = f"{socket.gethostname()}-{pysecrets.token_hex(4)}"
    dispatcher = Dispatcher(OutboxStreams(client, keys), settings, registry(provider_effects, callbacks),
                            metrics, consumer)
    transactor = Transactor(store, settings, clock, metrics)
    return Runtime(
        settings=settings,
        store=store,
        store_info=store_info,
        transactor=transactor,
        secrets=secret,
        catalog=Catalog.load(),
        metrics=metrics,
        clock=clock,
        http=http,
        providers=providers,
        callbacks=callbacks,
        timers=TimerWorker(transactor, clock, metrics),
        dispatcher=dispatcher,
    )
