"""The outbox dispatcher: performs committed effects from the shards' Redis Streams.

Entries are read with a consumer group; an entry is acknowledged (and then deleted, never
trimmed unread) only after its effect was performed. An entry whose delivery failed, or that
a crashed dispatcher left pending, is claimed again after a back-off that doubles with each
delivery, so every effect happens at least once; the upstreams de-duplicate on the entry's
reference (verification id + generation or version).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from machines.vocabulary import Status
from service import signing
from service.callbacks import is_private_address
from service.crypto import Secrets
from service.keys import Keys
from service.metrics import Metrics
from service.providers.ports import SmsGateway
from service.settings import Settings
from service.store import Store

log = structlog.get_logger("veriflow.outbox")

GROUP = "dispatch"
MAX_BACKOFF_MS = 300_000
PENDING_PAGE = 100


class PermanentFailureError(RuntimeError):
    """An effect that can never succeed (a refused callback address): dropped, not retried."""


def sms_text(service_name: str | None, code: str) -> str:
    return f"[{service_name or 'veriflow'}] 본인확인 인증번호 [{code}]를 입력해주세요."


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        secrets: Secrets,
        sms: SmsGateway,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        consumer: str,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.keys: Keys = store.keys
        self.settings = settings
        self.secrets = secrets
        self.sms = sms
        self.http = http
        self.metrics = metrics
        self.consumer = consumer
        self.streams = self.keys.all_outboxes()
        self.semaphore = asyncio.Semaphore(settings.outbox_concurrency)
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "sms": self.send_sms,
            "notify": self.notify,
        }

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

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
        batch = self.settings.outbox_batch
        if isinstance(self.redis, RedisCluster):  # one slot per call on a cluster
            replies: list[Any] = []
            for stream in self.streams:
                replies += await self.redis.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=batch)
            if not replies:
                await asyncio.sleep(block / 1000)
        else:
            streams = dict.fromkeys(self.streams, ">")
            replies = await self.redis.xreadgroup(GROUP, self.consumer, streams, count=batch, block=block)
        jobs = [
            self.handle(_text(stream), _text(entry_id), fields, deliveries=1)
            for stream, entries in replies or []
            for entry_id, fields in entries
            if fields  # an entry deleted after delivery has no fields left
        ]
        await asyncio.gather(*jobs)
        return len(jobs)

    async def recover_once(self) -> int:
        """Claim entries whose delivery failed or whose dispatcher died, once their back-off passed."""
        jobs = []
        for stream in self.streams:
            jobs += await self._recover_stream(stream)
        await asyncio.gather(*jobs)
        return len(jobs)

    async def _recover_stream(self, stream: str) -> list[Awaitable[None]]:
        """Page through the whole pending list: entries still backing off must not hide the due
        ones behind them."""
        base = self.settings.outbox_retry_idle_ms
        jobs: list[Awaitable[None]] = []
        start = "-"
        while True:
            page = await self.redis.xpending_range(stream, GROUP, min=start, max="+", count=PENDING_PAGE,
                                                   idle=base)
            for item in page:
                deliveries = int(item["times_delivered"])
                backoff = min(base * 2 ** (deliveries - 1), MAX_BACKOFF_MS)
                if int(item["time_since_delivered"]) < backoff:
                    continue
                claimed = await self.redis.xclaim(stream, GROUP, self.consumer, backoff, [item["message_id"]])
                for entry_id, fields in claimed:
                    if fields:
                        jobs.append(self.handle(stream, _text(entry_id), fields, deliveries + 1))
                    else:
                        await self._done(stream, _text(entry_id))
            if len(page) < PENDING_PAGE:
                return jobs
            start = "(" + _text(page[-1]["message_id"])

    async def handle(self, stream: str, entry_id: str, fields: dict[Any, Any], deliveries: int) -> None:
        payload = orjson.loads(fields.get(b"e") or fields.get("e") or b"{}")
        kind = str(payload.get("kind"))
        structlog.contextvars.bind_contextvars(verification_id=payload.get("id"))
        async with self.semaphore:
            try:
                await self.handlers[kind](payload)
            except PermanentFailureError as exc:
                log.warning("outbox.dropped", kind=kind, reason=str(exc))
                self.metrics.effects.labels(kind, "dropped").inc()
            except Exception as exc:  # noqa: BLE001 - any failure is retried after a back-off
                if not self._give_up(kind, entry_id, deliveries):
                    log.warning("outbox.retry", kind=kind, deliveries=deliveries, error=repr(exc))
                    self.metrics.effects.labels(kind, "retry").inc()
                    return
                log.error("outbox.gave_up", kind=kind, deliveries=deliveries, error=repr(exc))  # noqa: TRY400 - expected, no traceback
                self.metrics.effects.labels(kind, "gave_up").inc()
            else:
                self.metrics.effects.labels(kind, "done").inc()
            finally:
                structlog.contextvars.unbind_contextvars("verification_id")
        await self._done(stream, entry_id)

    def _give_up(self, kind: str, entry_id: str, deliveries: int) -> bool:
        """Callbacks are retried until a 2xx, for a bounded time; an SMS, a call or a push only a
        few times (its session is over long before the last)."""
        if kind == "notify":
            created_ms = int(entry_id.partition("-")[0])
            return time.time() * 1000 - created_ms > self.settings.callback_give_up_after_s * 1000
        return deliveries >= self.settings.outbox_max_attempts

    async def _done(self, stream: str, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()

    async def send_sms(self, payload: dict[str, Any]) -> None:
        record = await self.store.load(payload["id"])
        generation = int(payload["gen"])
        if record is None or record.status is not Status.PENDING or record.code_generation != generation:
            log.info("outbox.sms_superseded", generation=generation)
            return  # the verification ended or a newer code replaced this one: nothing to send
        subject = self.secrets.subject(record)
        code = self.secrets.unseal(payload["code"], f"{record.id}|{generation}").decode()
        await self.sms.send_sms(f"{record.id}:{generation}", subject.phone, sms_text(record.service_name, code))

    async def notify(self, payload: dict[str, Any]) -> None:
        url = str(payload["url"])
        host = urlsplit(url).hostname or ""
        # An address in the URL is checked here; a name, by the session's resolver on connecting.
        if not self.settings.allow_private_callbacks and is_private_address(host):
            msg = "callback host is a private address"
            raise PermanentFailureError(msg)
        view = payload["view"]
        if view["status"] == Status.VERIFIED and payload.get("verified_at"):
            view["key_token"] = self.secrets.key_token(view["id"], int(payload["verified_at"]))
        body = orjson.dumps({
            "event_id": f"{view['id']}.{payload['version']}",
            "type": "verification.updated",
            "verification": view,
        })
        secret = self.settings.api_keys.get(str(payload["client"]))
        if secret is None:
            msg = "the client no longer exists"
            raise PermanentFailureError(msg)
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.sign(secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
        # Never follow a redirect: it could lead anywhere, the service's own network included.
        async with self.http.post(url, data=body, headers=headers, timeout=timeout,
                                  allow_redirects=False) as resp:
            if not 200 <= resp.status < 300:  # noqa: PLR2004
                msg = f"callback answered {resp.status}"
                raise RuntimeError(msg)

    async def pending_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending(stream, GROUP)
        total = 0
        for summary in await pipe.execute(raise_on_error=False):
            if isinstance(summary, dict):
                total += int(summary.get("pending", 0))
        return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
