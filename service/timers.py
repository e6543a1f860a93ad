"""The timer worker: fires due timers from each shard's sorted set through the transactor.

A claim pushes the timer's score forward by a lease (see scripts.CLAIM_TIMERS); firing
commits the machine's `expire` with the timer's removal in the same step. A worker that dies
between the two leaves the timer to come due again after the lease: at-least-once, and a
second firing finds the deadline already handled and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from machines.events import TimerFired
from machines.record import Verification
from service.backoff import Outage
from service.clock import Clock
from service.errors import UnknownVerificationError
from service.metrics import Metrics
from service.store import audit
from service.store.health import is_store_fault
from service.store.keys import parse_timer_member
from service.transactor import Transactor

log = structlog.get_logger("veriflow.timers")


class TimerWorker:
    def __init__(self, transactor: Transactor, clock: Clock, metrics: Metrics) -> None:
        self.transactor = transactor
        self.store = transactor.store
        self.settings = transactor.settings
        self.clock = clock
        self.metrics = metrics
        self.fired = 0
        self.outage = Outage("timers")

    async def run(self, stop: asyncio.Event) -> None:
        poll_s = self.settings.timer_poll_ms / 1000
        while not stop.is_set():
            try:
                fired = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - logged by the back-off, retried after it
                await _wait(stop, self.outage.failed(exc))
                continue
            self.outage.recovered()
            if fired == 0:
                await _wait(stop, poll_s)

    async def run_once(self) -> int:
        """Claim and fire what is due on every shard; returns how many timers fired."""
        now = self.clock.now_ms()
        fired = 0
        for shard in range(self.store.keys.shards):
            members = await self.store.claim_due_timers(
                shard, now, self.settings.timer_lease_ms, self.settings.timer_batch,
            )
            if members:
                await self.fire_batch(shard, members)
            fired += len(members)
        return fired

    async def fire_batch(self, shard: int, members: list[str]) -> None:
        """Fire a claimed batch in two round trips (one pipelined read, one pipelined commit).
        Should the batch fail as a whole (a malformed member, an undefined transition), each
        timer is fired on its own, so that one bad timer cannot hold back the others."""
        now = self.clock.now_ms()
        requests, lags = [], []
        try:
            for member in members:
                verification_id, _, due_ms = parse_timer_member(member)
                lags.append(max(now - due_ms, 0) / 1000)
                requests.append((verification_id, self._expire(), member))
            decisions = await self.transactor.apply_batch(requests, actor=audit.TIMER)
        except Exception as exc:
            if is_store_fault(exc):
                raise  # the store is away: the loop backs off, the claimed timers come due again
            log.exception("timers.batch_failed")
            await asyncio.gather(*(self.fire(shard, member) for member in members))
            return
        for lag in lags:
            self.metrics.timer_lag_seconds.observe(lag)
        idle = [member for member, decision in zip(members, decisions, strict=True)
                if decision is None or not decision.changed]
        await self.store.drop_timers(shard, idle)  # nothing left to do for these
        self.fired += len(members)

    def _expire(self) -> Callable[[Verification], TimerFired]:
        def event(_: Verification) -> TimerFired:
            return TimerFired(self.clock.now_ms())

        return event

    async def fire(self, shard: int, member: str) -> None:
        try:
            verification_id, kind, due_ms = parse_timer_member(member)
        except ValueError:
            log.exception("timers.malformed", member=member)
            await self.store.drop_timer(shard, member)  # no verification can ever claim it
            return
        structlog.contextvars.bind_contextvars(verification_id=verification_id)
        try:
            now = self.clock.now_ms()
            self.metrics.timer_lag_seconds.observe(max(now - due_ms, 0) / 1000)

            async def event(_: Verification) -> TimerFired:
                return TimerFired(self.clock.now_ms())

            try:
                decision = await self.transactor.apply(verification_id, event, fired_timer=member,
                                                       actor=audit.TIMER)
            except UnknownVerificationError:
                decision = None
            if decision is None or not decision.changed:
                await self.store.drop_timer(shard, member)  # nothing left to do for this timer
            self.fired += 1
        except Exception as exc:
            if is_store_fault(exc):
                raise
            log.exception("timers.fire_failed", timer_kind=kind)  # retried after the lease
        finally:
            structlog.contextvars.unbind_contextvars("verification_id")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when the worker is told to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
