"""The outbox dispatcher: performs committed effects from the shards' outbox streams.

Entries are read with a consumer group; an entry is acknowledged (and then deleted, never
trimmed unread) only after its effect was performed. An entry whose delivery failed, or that
a crashed dispatcher left pending, is claimed again after a back-off that doubles with each
delivery, so every effect happens at least once; the upstreams de-duplicate on the entry's
reference (verification id + generation or version).

Every kind of entry has one handler (`registry`): SMS, ARS calls, PASS pushes, client callbacks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from service.effects import entries
from service.effects.callbacks import Callbacks
from service.effects.handlers import ProviderEffects
from service.errors import PermanentFailureError
from service.metrics import Metrics
from service.settings import Settings
from service.store.outbox import Entry, OutboxStreams

log = structlog.get_logger("veriflow.outbox")

MAX_BACKOFF_MS = 300_000
PENDING_PAGE = 100

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def registry(provider_effects: ProviderEffects, callbacks: Callbacks) -> dict[str, Handler]:
    """The one table of outbox entry kinds and the handlers that perform them."""
    return {
        entries.SMS: provider_effects.send_sms,
        entries.CALL: provider_effects.place_call,
        entries.PUSH: provider_effects.send_push,
        entries.NOTIFY: callbacks.notify,
    }


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxStreams,
        settings: Settings,
        handlers: Mapping[str, Handler],
        metrics: Metrics,
        consumer: str,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.handlers = handlers
        self.metrics = metrics
        self.consumer = consumer
        self.semaphore = asyncio.Semaphore(settings.outbox_concurrency)

    async def ensure_groups(self) -> None:
        await self.outbox.ensure_groups()

    async def run(self, stop: asyncio.Event) -> None:
        await self.ensure_groups()
        last_recovery = 0.0
        while not stop.is_set():
            try:
                await self.read_once()
                if time.monotonic() - last_recovery > 1:
                    last_recovery = time.monotonic()
                    await self.recover_once()
            except Exception:
                log.exception("outbox.loop_error")
                await asyncio.sleep(1)

    async def read_once(self, block_ms: int | None = None) -> int:
        """Read new entries from every shard and perform them; returns how many were handled."""
        block = self.settings.outbox_block_ms if block_ms is None else block_ms
        found = await self.outbox.read_new(self.consumer, self.settings.outbox_batch, block)
        # An entry deleted after delivery has no payload left.
        jobs = [self.handle(entry, deliveries=1) for entry in found if entry.payload]
        await asyncio.gather(*jobs)
        return len(jobs)

    async def recover_once(self) -> int:
        """Claim entries whose delivery failed or whose dispatcher died, once their back-off passed."""
        jobs = []
        for stream in self.outbox.streams:
            jobs += await self._recover_stream(stream)
        await asyncio.gather(*jobs)
        return len(jobs)

    async def _recover_stream(self, stream: str) -> list[Awaitable[None]]:
        """Page through the whole pending list: entries still backing off must not hide the due
        ones behind them."""
        base = self.settings.outbox_retry_idle_ms
        jobs: list[Awaitable[None]] = []
        after: str | None = None
        while True:
            page = await self.outbox.pending_page(stream, after, PENDING_PAGE, base)
            for item in page:
                backoff = min(base * 2 ** (item.deliveries - 1), MAX_BACKOFF_MS)
                if item.idle_ms < backoff:
                    continue
                for entry in await self.outbox.claim(stream, self.consumer, backoff, item.entry_id):
                    if entry.payload:
                        jobs.append(self.handle(entry, item.deliveries + 1))
                    else:
                        await self.outbox.done(stream, entry.entry_id)
            if len(page) < PENDING_PAGE:
                return jobs
            after = page[-1].entry_id

    async def handle(self, entry: Entry, deliveries: int) -> None:
        payload = entries.decode(entry.payload)
        kind = str(payload.get("kind"))
        structlog.contextvars.bind_contextvars(verification_id=payload.get("id"))
        async with self.semaphore:
            try:
                await self.handlers[kind](payload)
            except PermanentFailureError as exc:
                log.warning("outbox.dropped", kind=kind, reason=str(exc))
                self.metrics.effects.labels(kind, "dropped").inc()
            except Exception as exc:  # noqa: BLE001 - any failure is retried after a back-off
                if not self._give_up(kind, entry.entry_id, deliveries):
                    log.warning("outbox.retry", kind=kind, deliveries=deliveries, error=repr(exc))
                    self.metrics.effects.labels(kind, "retry").inc()
                    return
                log.error("outbox.gave_up", kind=kind, deliveries=deliveries, error=repr(exc))  # noqa: TRY400 - expected, no traceback
                self.metrics.effects.labels(kind, "gave_up").inc()
            else:
                self.metrics.effects.labels(kind, "done").inc()
            finally:
                structlog.contextvars.unbind_contextvars("verification_id")
        await self.outbox.done(entry.stream, entry.entry_id)

    def _give_up(self, kind: str, entry_id: str, deliveries: int) -> bool:
        """Callbacks are retried until a 2xx, for a bounded time; an SMS, a call or a push only a
        few times (its session is over long before the last)."""
        if kind == entries.NOTIFY:
            created_ms = int(entry_id.partition("-")[0])
            return time.time() * 1000 - created_ms > self.settings.callback_give_up_after_s * 1000
        return deliveries >= self.settings.outbox_max_attempts

    async def pending_count(self) -> int:
        return await self.outbox.pending_count()
