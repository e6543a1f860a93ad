"""The transition loop: read -> decide (pure) -> compare-and-set, retried on a lost race.

Every input (API call, provider event, timer) goes through `Engine.apply`, so the same
guarantees hold for all: one writer wins each version, and a decision's timers and outbox
entries are committed with it or not at all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import orjson
import structlog

from machines.channels import MACHINES
from machines.effects import ArmTimer, DisarmTimer, Notify, SendSms
from machines.engine import Decision
from machines.events import Event
from machines.record import Verification, changed_fields
from machines.vocabulary import Status
from service.clock import Clock
from service.crypto import Secrets
from service.keys import Keys, timer_member
from service.metrics import Metrics
from service.settings import Settings
from service.store import CommitOps, CommitStatus, Store
from service.views import verification_view

log = structlog.get_logger("veriflow.engine")

MAX_COMMIT_TRIES = 100


class UnknownVerificationError(LookupError):
    """No verification of this client has that id (or it is gone)."""


class ClaimTakenError(RuntimeError):
    """A unique claim (a live tx_id) belongs to another verification."""


class BusyError(RuntimeError):
    """Too many concurrent writers on one verification; the caller may retry."""


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    value: str
    ttl_ms: int


class Engine:
    def __init__(
        self, store: Store, settings: Settings, secrets: Secrets, clock: Clock, metrics: Metrics,
    ) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self.settings = settings
        self.secrets = secrets
        self.clock = clock
        self.metrics = metrics

    def decide(self, record: Verification, event: Event) -> Decision:
        machine = MACHINES[record.channel]
        return machine.decide(record, event, self.settings.policy(record.channel))

    async def create(
        self, record: Verification, event: Event, claims: tuple[Claim, ...] = (),
    ) -> Decision:
        """Commit a new verification; raises ClaimTakenError when its tx_id is live elsewhere."""
        decision = self.decide(record, event)
        result = await self.store.commit(self._ops(decision, None, claims))
        if result.status is CommitStatus.TAKEN:
            raise ClaimTakenError(result.detail)
        if result.status is CommitStatus.CONFLICT:  # a 96-bit id collision: never in practice
            raise BusyError(record.id)
        self.metrics.started.labels(record.channel.value).inc()
        self._observe(decision)
        return decision

    async def apply(
        self,
        verification_id: str,
        build_event: Callable[[Verification], Awaitable[Event]],
        *,
        client_id: str | None = None,
        fired_timer: str | None = None,
    ) -> Decision:
        """Decide `build_event(record)` on the stored record and commit it, retrying lost races."""
        for attempt in range(MAX_COMMIT_TRIES):
            record = await self.store.load(verification_id)
            if record is None or (client_id is not None and record.client_id != client_id):
                raise UnknownVerificationError(verification_id)
            decision = self.decide(record, await build_event(record))
            if not decision.changed:
                return decision
            result = await self.store.commit(self._ops(decision, fired_timer, ()))
            if result.status is CommitStatus.OK:
                self._observe(decision)
                return decision
            self.metrics.commit_conflicts.inc()
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))  # noqa: S311 - jitter
        raise BusyError(verification_id)

    async def apply_batch(
        self, requests: Sequence[tuple[str, Callable[[Verification], Event], str | None]],
    ) -> list[Decision | None]:
        """`apply` to many verifications in two round trips, one pipelined read and one pipelined
        commit (each commit still its own compare-and-set). Each request is (verification id,
        event builder, fired timer). A verification that lost a race goes through `apply` again
        on its own; an unknown one answers None."""
        records = await self.store.load_many([verification_id for verification_id, _, _ in requests])
        decisions: list[Decision | None] = [None] * len(requests)
        pending: list[tuple[int, Decision, CommitOps]] = []
        for index, ((_, build_event, fired_timer), record) in enumerate(zip(requests, records, strict=True)):
            if record is None:
                continue
            decision = decisions[index] = self.decide(record, build_event(record))
            if decision.changed:
                pending.append((index, decision, self._ops(decision, fired_timer, ())))
        results = await self.store.commit_many([ops for _, _, ops in pending])
        for (index, decision, _), result in zip(pending, results, strict=True):
            if result.status is CommitStatus.OK:
                self._observe(decision)
                continue
            self.metrics.commit_conflicts.inc()
            verification_id, build_event, fired_timer = requests[index]
            try:
                decisions[index] = await self.apply(verification_id, _awaitable(build_event),
                                                    fired_timer=fired_timer)
            except UnknownVerificationError:
                decisions[index] = None
        return decisions

    def _ops(self, decision: Decision, fired_timer: str | None, claims: tuple[Claim, ...]) -> CommitOps:
        before, after = decision.before, decision.record
        version = before.version + 1
        after_versioned = _with_version(after, version)
        fields, deleted = changed_fields(None if before.version == 0 else before, after_versioned)
        fields.pop("version", None)  # the script writes the version itself
        shard = int(after.id[:4], 16)
        ops = CommitOps(
            record_key=self.keys.record(after.id),
            timers_key=self.keys.timers(shard),
            outbox_key=self.keys.outbox(shard),
            expected_version=before.version,
            new_version=version,
            ttl_ms=self._record_ttl_ms(after),
            fields=fields,
            deleted=deleted,
            claims=[(c.key, c.value, c.ttl_ms) for c in claims],
        )
        if fired_timer is not None:
            ops.timers_remove.append(fired_timer)
        for effect in decision.effects:
            match effect:
                case ArmTimer(kind, due):
                    ops.timers_add.append((due, timer_member(after.id, kind, due)))
                case DisarmTimer(kind, due):
                    ops.timers_remove.append(timer_member(after.id, kind, due))
                case SendSms(generation, sealed_code):
                    ops.outbox.append(orjson.dumps(
                        {"kind": "sms", "id": after.id, "gen": generation, "code": sealed_code}))
                case Notify() if after.callback_url:
                    view = verification_view(after_versioned, None)
                    verified_at = after.verified_at if after.status is Status.VERIFIED else None
                    ops.outbox.append(orjson.dumps({
                        "kind": "notify", "id": after.id, "version": version, "view": view,
                        "client": after.client_id, "url": after.callback_url, "verified_at": verified_at,
                    }))
        if decision.ended and after.tx_id:
            ops.releases.append(self.keys.tx_claim(shard, after.client_id, after.tx_id))
        return ops

    def _record_ttl_ms(self, record: Verification) -> int:
        """Live records outlast their deadline; finished ones stay readable for record_ttl_s."""
        keep_ms = self.settings.record_ttl_s * 1000
        if not record.is_live:
            return keep_ms
        deadline = record.result_expires_at if record.status is Status.VERIFIED else record.expires_at
        return max((deadline or 0) - self.clock.now_ms(), 0) + keep_ms

    def _observe(self, decision: Decision) -> None:
        before, after = decision.before, decision.record
        channel = after.channel.value
        if decision.reply.code is not None:
            self.metrics.replies.labels(channel, decision.reply.code).inc()
        if after.status is not before.status and after.status is not Status.PENDING:
            self.metrics.outcomes.labels(channel, after.status.value, after.last_code or "").inc()
            log.info("verification.status", verification_id=after.id, status=after.status.value,
                     state=after.state, last_code=after.last_code)


def _with_version(record: Verification, version: int) -> Verification:
    return replace(record, version=version)


def _awaitable(build_event: Callable[[Verification], Event]) -> Callable[[Verification], Awaitable[Event]]:
    async def build(record: Verification) -> Event:
        return build_event(record)

    return build
