"""The running service's parts, wired once: store, transactor, providers, effects, workers."""

from __future__ import annotations

import secrets as pysecrets
import socket
from dataclasses import dataclass
from typing import Any

import structlog

from service.catalog import Catalog
from service.clock import Clock, SystemClock
from service.crypto import Secrets
from service.effects.callbacks import Callbacks, callback_session
from service.effects.dispatcher import Dispatcher, registry
from service.effects.handlers import ProviderEffects
from service.metrics import Metrics
from service.providers.ports import Providers
from service.providers.sessions import ProviderSessions
from service.providers.wiring import build_providers, webhook_secrets
from service.settings import ConfigError, Settings
from service.store.client import StoreInfo, StoreOptions, connect
from service.store.keys import Keys
from service.store.limits import Limiter, keyed_digest_for
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
    provider_sessions: ProviderSessions  # each provider's own HTTP connection pool
    providers: Providers
    callbacks: Callbacks
    timers: TimerWorker
    dispatcher: Dispatcher
    provider_secrets: dict[str, str]  # provider id -> the secret of its webhook events
    limiter: Limiter

    async def close(self) -> None:
        await self.provider_sessions.close()
        await self.callbacks.close()
        await self.store.redis.aclose()


async def service_key(store: Store, configured: str | None, *, embedded: bool) -> bytes:
    """VERIFLOW_SECRET_KEY, or, on the embedded store only, a development key made once and kept
    in that store. It is never written to a real Redis: whoever reads it would unseal everything."""
    if configured:
        return configured.encode()
    if not embedded:
        msg = "VERIFLOW_SECRET_KEY is not set (required with VERIFLOW_REDIS_URL)"
        raise ConfigError(msg)
    log.warning("secret_key.development", hint="set VERIFLOW_SECRET_KEY in production")
    return await store.development_key()


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
    simulator_mounted: bool = True,
) -> Runtime:
    if client is None:
        client, store_info = connect(settings.redis_url, store_options(settings))
    assert store_info is not None  # noqa: S101 - given together with the client
    clock = clock or SystemClock()
    keys = Keys(settings.shards)
    store = Store(client, keys)
    key = await service_key(store, settings.secret_key, embedded=settings.redis_url is None)
    secret = Secrets(key)
    metrics = Metrics()
    limiter = Limiter(client, settings.limits, keyed_digest_for(key), clock.now_ms,
                      on_refusal=metrics.limit_refusal)
    provider_sessions = ProviderSessions()
    try:
        providers = build_providers(settings, provider_sessions, simulator_url)
    except BaseException:  # a ConfigError, typically: the sessions made so far must not leak
        await provider_sessions.close()
        raise
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
        provider_sessions=provider_sessions,
        providers=providers,
        callbacks=callbacks,
        timers=TimerWorker(transactor, clock, metrics),
        dispatcher=dispatcher,
        provider_secrets=webhook_secrets(settings, simulator_mounted=simulator_mounted),
        limiter=limiter,
    )
