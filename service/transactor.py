"""The transition loop: read -> decide (pure) -> compare-and-set, retried on a lost race.

Every input (API call, provider event, timer) goes through `Transactor.apply`, so the same
guarantees hold for all: one writer wins each version, and a decision's timers and outbox
entries are committed with it or not at all (`store.plan` says what a commit writes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Sequence

import structlog

from machines import fallback
from machines.channels import MACHINES
from machines.core import Decision
from machines.events import Event, SwitchChannel, Tick
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status
from service.clock import Clock
from service.errors import BusyError, ClaimTakenError, RecordMovedOnError, UnknownVerificationError
from service.metrics import Metrics
from service.record_cache import RecordCache
from service.settings import Settings
from service.store import audit
from service.store.keys import Keys
from service.store.plan import Claim, CommitPlanner
from service.store.store import CommitOps, CommitStatus, Store

log = structlog.get_logger("veriflow.transactor")

MAX_COMMIT_TRIES = 100
# A tx_id held for a start still being admitted: the commit then keeps it for the verification's
# life; a process that dies before committing blocks the tx_id only this long.
IN_FLIGHT_CLAIM_MS = 30_000

EventBuilder = Callable[[Verification], Awaitable[Event]]


class Transactor:
    def __init__(self, store: Store, settings: Settings, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.plan = CommitPlanner(store.keys, settings)
        self.records = RecordCache(settings.store.record_cache)
        self._policies: dict[Channel, Policy] = {}  # settings never change in a running process

    def decide(self, record: Verification, event: Event) -> Decision:
        if isinstance(event, SwitchChannel):
            return fallback.decide(MACHINES, record, event, self.settings.policy)
        policy = self._policies.get(record.channel)
        if policy is None:
            policy = self._policies[record.channel] = self.settings.policy(record.channel)
        return MACHINES[record.channel].decide(record, event, policy)

    def _ops(self, decision: Decision, fired_timer: str | None, claims: tuple[Claim, ...],
             actor: str = audit.CLIENT) -> CommitOps:
        return self.plan.ops(decision, self.clock.now_ms(), fired_timer, claims, actor)

    async def hold_tx_id(self, record: Verification) -> bool:
        """Take the tx_id of a verification about to be created before anything else is done for
        it (limits counted, an upstream asked), so that of simultaneous starts with one tx_id only
        one goes on; raises ClaimTakenError when it is live elsewhere. False when there is no tx_id.
        `create(..., tx_id_held=True)` then commits with it; `drop_tx_id` gives it back when the
        verification is not created."""
        claim = self.plan.tx_claim(record)
        if claim is None:
            return False
        if self.plan.claim_in_slot(record):  # the commit takes it again, for the verification's life
            claim = dataclasses.replace(claim, ttl_ms=min(claim.ttl_ms, IN_FLIGHT_CLAIM_MS))
        await self._reserve(claim)
        return True

    async def drop_tx_id(self, record: Verification) -> None:
        claim = self.plan.tx_claim(record)
        if claim is not None:
            await self.store.release_claim(claim.key, claim.value)

    async def create(self, record: Verification, event: Event, *, tx_id_held: bool = False) -> Decision:
        """Commit a new verification; raises ClaimTakenError when its tx_id is live elsewhere.

        A tx_id claim in the verification's own slot is taken by the commit itself; one in
        another slot is reserved just before and given back if the commit does not happen
        (unless `hold_tx_id` took it: then its caller gives it back)."""
        decision = self.decide(record, event)
        claim = self.plan.tx_claim(record)
        in_commit = () if claim is None or not self.plan.claim_in_slot(record) else (claim,)
        reserved = claim is not None and not in_commit and not tx_id_held
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
        ops = self._ops(decision, None, claims)
        result = await self.store.commit(ops)
        if result.status is CommitStatus.TAKEN and await self._settle_holder(result.detail):
            ops = self._ops(decision, None, claims)
            result = await self.store.commit(ops)
        if result.status is CommitStatus.TAKEN:
            raise ClaimTakenError(result.detail)
        if result.status is CommitStatus.CONFLICT:  # a 96-bit id collision: never in practice
            raise BusyError(decision.record.id)
        self._committed(ops)

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
        claim = self.plan.tx_claim(after)
        if decision.ended and claim is not None and not self.plan.claim_in_slot(after):
            await self.store.release_claim(claim.key, claim.value)
        self._observe(decision)

    async def _settle_holder(self, claim_key: str | None) -> bool:
        """A claim's holder whose deadline passed but whose timer has not fired yet is expired
        now (which releases the claim); True when the claim may be free."""
        holder_id = await self.store.claim_holder(claim_key) if claim_key else None
        if holder_id is None:
            return True
        if self.keys.shard_of_id(holder_id) is None:
            return False

        async def tick(_: Verification) -> Event:
            return Tick(self.clock.now_ms())

        try:
            decision = await self.apply(holder_id, tick, actor=audit.TIMER)
        except UnknownVerificationError:
            return False
        return not decision.record.is_live

    async def apply(
        self,
        verification_id: str,
        build_event: EventBuilder,
        *,
        client_id: str | None = None,
        fired_timer: str | None = None,
        claims: Callable[[Decision], Sequence[Claim]] | None = None,
        actor: str = audit.CLIENT,
        read: bool = False,
    ) -> Decision:
        """Decide `build_event(record)` on the stored record and commit it, retrying lost races.

        `claims` names unique keys the commit must take with the decision (a provider event id, a
        tx_id again): when one is held, nothing is written and ClaimTakenError is raised. `actor`
        (the API client, `provider:<id>`, the timer) is who the audit trail says caused it. The
        first try decides on this process's copy of the record when it has one (see
        service.record_cache), unless `read` asks for the stored record."""
        record = None if read else self.records.get(verification_id)
        kept = record is not None  # this process's copy: only a commit proves it current
        if record is None:
            self._copied("miss")
            record = await self.store.load(verification_id)
        for attempt in range(MAX_COMMIT_TRIES):
            record = _owned(verification_id, record, client_id)
            try:
                event = await build_event(record)
            except RecordMovedOnError as moved:  # decided again on the record that won
                self.records.drop(verification_id)
                record, kept = moved.current, False
                continue
            decision = self.decide(record, event)
            if not decision.changed and kept:  # nothing to commit checks the copy: read it
                self._copied("unchanged")
                self.records.drop(verification_id)
                record, kept = await self.store.load(verification_id), False
                continue
            if not decision.changed:
                return decision
            taken = tuple(claims(decision)) if claims is not None else ()
            ops = self._ops(decision, fired_timer, taken, actor)
            result = await self.store.commit(ops)
            if result.status is CommitStatus.OK:
                if kept:
                    self._copied("hit")
                self._committed(ops)
                await self._after_commit(decision)
                return decision
            if result.status is CommitStatus.TAKEN:
                raise ClaimTakenError(result.detail)
            self.metrics.commit_conflicts.inc()
            if kept:
                self._copied("stale")
            self.records.drop(verification_id)
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))  # noqa: S311 - jitter
            kept = False
            known = result.current is not None  # the record that won came back with the answer
            record = result.current_record() if known else await self.store.load(verification_id)
        raise BusyError(verification_id)

    def _copied(self, result: str) -> None:
        """Count what this process's copy of a record did (veriflow_record_cache_total)."""
        self.metrics.labelled(self.metrics.record_cache, result).inc()

    def _committed(self, ops: CommitOps) -> None:
        if ops.after is not None:
            self.records.keep(ops.after, self.clock.now_ms())

    async def apply_batch(
        self, requests: Sequence[tuple[str, Callable[[Verification], Event], str | None]],
        actor: str = audit.CLIENT,
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
                pending.append((index, decision, self._ops(decision, fired_timer, (), actor)))
        results = await self.store.commit_many([ops for _, _, ops in pending])
        for (index, decision, ops), result in zip(pending, results, strict=True):
            if result.status is CommitStatus.OK:
                self._committed(ops)
                await self._after_commit(decision)
                continue
            self.metrics.commit_conflicts.inc()
            self.records.drop(requests[index][0])
            verification_id, build_event, fired_timer = requests[index]
            try:
                decisions[index] = await self.apply(verification_id, _awaitable(build_event),
                                                    fired_timer=fired_timer, actor=actor)
            except UnknownVerificationError:
                decisions[index] = None
        return decisions

    def _observe(self, decision: Decision) -> None:
        before, after = decision.before, decision.record
        channel = after.channel.value
        if decision.reply.code is not None:
            self.metrics.labelled(self.metrics.replies, channel, decision.reply.code).inc()
        if after.status is not before.status and after.status is not Status.PENDING:
            self.metrics.outcomes.labels(channel, after.status.value, after.last_code or "").inc()
            log.info("verification.status", verification_id=after.id, status=after.status.value,
                     state=after.state, last_code=after.last_code)


def _owned(verification_id: str, record: Verification | None, client_id: str | None) -> Verification:
    """The record, when there is one and it is `client_id`'s (None: anyone's)."""
    if record is None or (client_id is not None and record.client_id != client_id):
        raise UnknownVerificationError(verification_id)  # (an owner never changes)
    return record


def _awaitable(build_event: Callable[[Verification], Event]) -> EventBuilder:
    async def build(record: Verification) -> Event:
        return build_event(record)

    return build
