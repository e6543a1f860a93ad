"""The outbox dispatcher: performs committed effects from the shards' outbox streams.

Entries are read with a consumer group; an entry is acknowledged (and then deleted, never
trimmed unread) only after its effect was performed. An entry whose delivery failed, or that
a crashed dispatcher left pending, is claimed again after a back-off that doubles with each
delivery, so every effect happens at least once; the upstreams de-duplicate on the entry's
reference (verification id + generation or version).

Delivered once in normal operation: while a dispatcher holds an entry (waiting for a free slot
or performing it), it resets the entry's idle time every quarter of `outbox.retry_idle_ms`
(`OutboxStreams.extend`), so no other dispatcher claims it while its performer is alive. Only
an entry whose dispatcher died (or whose delivery failed) is claimed again: a duplicate happens
only when a dispatcher dies while performing an effect.

Consumers: a dispatcher deletes its own consumer when it stops (if nothing is pending on it); a
consumer idle past `outbox.consumer_idle_s` with nothing pending (a killed dispatcher's, once its
entries were claimed by others) is deleted by any dispatcher.

Every kind of entry has one handler (`registry`): SMS, ARS calls, PASS pushes, client callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from service.backoff import Outage
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
        self.outage = Outage("outbox")
        self.held: dict[tuple[str, str], int] = {}  # (stream, entry id) -> handlers holding it

    async def ensure_groups(self) -> None:
        await self.outbox.ensure_groups()

    async def run(self, stop: asyncio.Event) -> None:
        keeper = asyncio.create_task(self.keep_held(stop))
        try:
            await self._loop(stop)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _loop(self, stop: asyncio.Event) -> None:
        groups_ready = False
        last_recovery = last_prune = 0.0
        prune_every_s = min(60.0, max(1.0, self.settings.outbox_consumer_idle_s / 2))
        while not stop.is_set():
            try:
                if not groups_ready:
                    await self.ensure_groups()
                    groups_ready = True
                await self.read_once()
                if time.monotonic() - last_recovery > 1:
                    last_recovery = time.monotonic()
                    await self.recover_once()
                if time.monotonic() - last_prune > prune_every_s:
                    last_prune = time.monotonic()
                    await self.prune_consumers()
            except Exception as exc:  # noqa: BLE001 - logged by the back-off, retried after it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.outage.failed(exc))
                continue
            self.outage.recovered()

    async def keep_held(self, stop: asyncio.Event) -> None:
        """While entries are held, reset their idle time often enough that none is claimed."""
        every_s = max(self.settings.outbox_retry_idle_ms / 4, 50) / 1000
        while not stop.is_set():
            await asyncio.sleep(every_s)
            by_stream: dict[str, list[str]] = {}
            for stream, entry_id in list(self.held):
                by_stream.setdefault(stream, []).append(entry_id)
            for stream, ids in by_stream.items():
                with contextlib.suppress(Exception):  # the loop reports store faults
                    await self.outbox.extend(stream, self.consumer, ids)

    async def prune_consumers(self) -> int:
        """Delete the consumers idle past the bound with nothing pending (dead dispatchers')."""
        idle_ms = self.settings.outbox_consumer_idle_s * 1000
        deleted = 0
        for stream in self.outbox.streams:
            for name in await self.outbox.idle_consumers(stream, idle_ms):
                if name != self.consumer and await self.outbox.retire(stream, name):
                    deleted += 1
        if deleted:
            log.info("outbox.consumers_pruned", deleted=deleted)
        return deleted

    async def retire(self) -> None:
        """On shutdown: delete this dispatcher's consumer where it has nothing pending."""
        kept = 0
        for stream in self.outbox.streams:
            try:
                if not await self.outbox.retire(stream, self.consumer):
                    kept += 1
            except Exception as exc:  # noqa: BLE001 - shutting down: say so, do not fail
                log.warning("outbox.retire_failed", error=repr(exc))
                return
        log.info("outbox.consumer_retired", consumer=self.consumer, kept_in_streams=kept)

    async def read_once(self, block_ms: int | None = None) -> int:
        """Read new entries from every shard and perform them; returns how many were handled."""
        block = self.settings.outbox_block_ms if block_ms is None else block_ms
        found = await self.outbox.read_new(self.consumer, self.settings.outbox_batch, block)
        # An entry deleted after delivery has no payload left.
        jobs = [self.handle(self._hold(entry), deliveries=1) for entry in found if entry.payload]
        await asyncio.gather(*jobs)
        return len(jobs)

    async def recover_once(self) -> int:
        """Claim entries whose delivery failed or whose dispatcher died, once their back-off passed."""
        claimed: list[tuple[Entry, int]] = []
        try:
            for stream in self.outbox.streams:
                await self._recover_stream(stream, claimed)
        except Exception:
            await self._perform_claimed(claimed)  # what was claimed before the failure
            raise
        await self._perform_claimed(claimed)
        return len(claimed)

    async def _perform_claimed(self, claimed: list[tuple[Entry, int]]) -> None:
        await asyncio.gather(*(self.handle(self._hold(entry), deliveries) for entry, deliveries in claimed))

    async def _recover_stream(self, stream: str, claimed: list[tuple[Entry, int]]) -> None:
        """Page through the whole pending list: entries still backing off must not hide the due
        ones behind them."""
        base = self.settings.outbox_retry_idle_ms
        after: str | None = None
        while True:
            page = await self.outbox.pending_page(stream, after, PENDING_PAGE, base)
            for item in page:
                backoff = min(base * 2 ** (item.deliveries - 1), MAX_BACKOFF_MS)
                if item.idle_ms < backoff or (stream, item.entry_id) in self.held:
                    continue
                for entry in await self.outbox.claim(stream, self.consumer, backoff, item.entry_id):
                    if entry.payload:
                        claimed.append((entry, item.deliveries + 1))
                    else:
                        await self.outbox.done(stream, entry.entry_id)
            if len(page) < PENDING_PAGE:
                return
            after = page[-1].entry_id

    def _hold(self, entry: Entry) -> Entry:
        key = (entry.stream, entry.entry_id)
        self.held[key] = self.held.get(key, 0) + 1
        return entry

    def _release(self, entry: Entry) -> None:
        key = (entry.stream, entry.entry_id)
        count = self.held.get(key, 0) - 1
        if count > 0:
            self.held[key] = count
        else:
            self.held.pop(key, None)

    async def handle(self, entry: Entry, deliveries: int) -> None:
        """Perform one held entry; it is released when this ends, however it ends."""
        try:
            await self._perform(entry, deliveries)
        finally:
            self._release(entry)

    async def _perform(self, entry: Entry, deliveries: int) -> None:
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
