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

from machines import fallback
from machines.channels import MACHINES
from machines.effects import (
    ArmTimer,
    DisarmTimer,
    Effect,
    Notify,
    PlaceCall,
    SaveMotpUser,
    SendPush,
    SendSms,
)
from machines.core import Decision
from machines.events import Event, SwitchChannel, Tick
from machines.record import Verification, changed_fields
from machines.vocabulary import Status
from service import motp_store
from service.clock import Clock
from service.crypto import Secrets
from service.keys import Keys, shard_in, timer_member
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
        if isinstance(event, SwitchChannel):
            return fallback.decide(MACHINES, record, event, self.settings.policy)
        machine = MACHINES[record.channel]
        return machine.decide(record, event, self.settings.policy(record.channel))

    def tx_claim(self, record: Verification) -> Claim | None:
        """The claim that keeps a client's tx_id unique among its live verifications."""
        if not record.tx_id:
            return None
        shard = self.keys.tx_shard(record.client_id, record.tx_id)
        live_s = self.settings.session_ttl_s(record.channel) + self.settings.result_ttl_s + 60
        return Claim(self.keys.tx_claim(shard, record.client_id, record.tx_id), record.id, live_s * 1000)

    def _claim_in_slot(self, record: Verification) -> bool:
        """Most verifications live in their tx_id's shard; an mOTP one lives in its user's."""
        return record.tx_id is None or self.keys.tx_shard(record.client_id, record.tx_id) == shard_in(record.id)

    async def create(self, record: Verification, event: Event) -> Decision:
        """Commit a new verification; raises ClaimTakenError when its tx_id is live elsewhere.

        A tx_id claim in the verification's own slot is taken by the commit itself; one in
        another slot is reserved just before and given back if the commit does not happen."""
        decision = self.decide(record, event)
        claim = self.tx_claim(record)
        in_commit = () if claim is None or not self._claim_in_slot(record) else (claim,)
        reserved = claim is not None and not in_commit
        if reserved and claim is not None:
            await self._reserve(claim)
        try:
            await self._commit_new(decision, in_commit)
        except BaseException:
            if reserved and claim is not None:
                await self.store.release_claim(claim.key, claim.value)
            raise
        self.metrics.started.labels(record.channel.value).inc()
        await self._after_commit(decision)
        return decision

    async def _commit_new(self, decision: Decision, claims: tuple[Claim, ...]) -> None:
        result = await self.store.commit(self._ops(decision, None, claims))
        if result.status is CommitStatus.TAKEN and await self._settle_holder(result.detail):
            result = await self.store.commit(self._ops(decision, None, claims))
        if result.status is CommitStatus.TAKEN:
            raise ClaimTakenError(result.detail)
        if result.status is CommitStatus.CONFLICT:  # a 96-bit id collision: never in practice
            raise BusyError(decision.record.id)

    async def _reserve(self, claim: Claim) -> None:
        if await self.store.reserve_claim(claim.key, claim.value, claim.ttl_ms):
            return
        if await self._settle_holder(claim.key) and await self.store.reserve_claim(
                claim.key, claim.value, claim.ttl_ms):
            return
        raise ClaimTakenError(claim.key)

    async def _after_commit(self, decision: Decision) -> None:
        """Give back a tx_id claimed outside the verification's slot (a crash before this leaves
        it to its own expiry), and count the outcome."""
        after = decision.record
        claim = self.tx_claim(after)
        if decision.ended and claim is not None and not self._claim_in_slot(after):
            await self.store.release_claim(claim.key, claim.value)
        self._observe(decision)

    async def _settle_holder(self, claim_key: str | None) -> bool:
        """A claim's holder whose deadline passed but whose timer has not fired yet is expired
        now (which releases the claim); True when the claim may be free."""
        holder = await self.store.redis.get(claim_key) if claim_key else None
        if holder is None:
            return True
        holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
        if self.keys.shard_of_id(holder_id) is None:
            return False

        async def tick(_: Verification) -> Event:
            return Tick(self.clock.now_ms())

        try:
            decision = await self.apply(holder_id, tick)
        except UnknownVerificationError:
            return False
        return not decision.record.is_live

    async def apply(
        self,
        verification_id: str,
        build_event: Callable[[Verification], Awaitable[Event]],
        *,
        client_id: str | None = None,
        fired_timer: str | None = None,
        claims: Callable[[Decision], Sequence[Claim]] | None = None,
    ) -> Decision:
        """Decide `build_event(record)` on the stored record and commit it, retrying lost races.

        `claims` names unique keys the commit must take with the decision (a provider event id, a
        tx_id again): when one is held, nothing is written and ClaimTakenError is raised."""
        for attempt in range(MAX_COMMIT_TRIES):
            record = await self.store.load(verification_id)
            if record is None or (client_id is not None and record.client_id != client_id):
                raise UnknownVerificationError(verification_id)
            decision = self.decide(record, await build_event(record))
            if not decision.changed:
                return decision
            taken = tuple(claims(decision)) if claims is not None else ()
            result = await self.store.commit(self._ops(decision, fired_timer, taken))
            if result.status is CommitStatus.OK:
                await self._after_commit(decision)
                return decision
            if result.status is CommitStatus.TAKEN:
                raise ClaimTakenError(result.detail)
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
                await self._after_commit(decision)
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
        shard = shard_in(after.id)
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
                case SaveMotpUser(user_before, user_after):
                    ops.companion = motp_store.companion(self.keys, user_before, user_after)
                case _:
                    entry = outbox_entry(effect, after_versioned)
                    if entry is not None:
                        ops.outbox.append(entry)
        claim = self.tx_claim(after)
        if decision.ended and claim is not None and self._claim_in_slot(after):
            ops.releases.append((claim.key, claim.value))
        return ops

    def _record_ttl_ms(self, record: Verification) -> int:
        """Live records outlast their deadline; finished ones stay readable for record_ttl_s."""
        keep_ms = self.settings.record_ttl_s * 1000
        if not record.is_live:  # counted from its end, however late a later commit comes
            return max((record.ended_at or self.clock.now_ms()) + keep_ms - self.clock.now_ms(), 1)
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


def outbox_entry(effect: Effect, record: Verification) -> bytes | None:
    """The outbox entry that performs `effect` for `record` (as committed), if it has one."""
    match effect:
        case SendSms(generation, sealed_code):
            return orjson.dumps({"kind": "sms", "id": record.id, "gen": generation, "code": sealed_code})
        case PlaceCall(generation, sealed_code):
            return orjson.dumps({"kind": "call", "id": record.id, "gen": generation, "code": sealed_code})
        case SendPush(generation):
            return orjson.dumps({"kind": "push", "id": record.id, "gen": generation})
        case Notify() if record.callback_url:
            verified_at = record.verified_at if record.status is Status.VERIFIED else None
            return orjson.dumps({
                "kind": "notify", "id": record.id, "version": record.version,
                "view": verification_view(record, None), "client": record.client_id,
                "url": record.callback_url, "verified_at": verified_at,
            })
    return None


def _with_version(record: Verification, version: int) -> Verification:
    return replace(record, version=version)


def _awaitable(build_event: Callable[[Verification], Event]) -> Callable[[Verification], Awaitable[Event]]:
    async def build(record: Verification) -> Event:
        return build_event(record)

    return build
