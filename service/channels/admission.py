"""One request's place in the abuse limits (contract section 9), taken at most once per request.

A start is admitted once it is valid, before the upstream is asked anything (`start`); a resend
or a fallback once the machine's answer for the record as read is known to send (`send`), which
is after the section 7 answers for a verification that is no longer pending and before the caps.
The builders of resend and fallback run inside the transactor's compare-and-set loop, once per
try: the grant is taken on the first try that needs it and reused by the others.

`settle(decision)` gives back what the request did not use, as `service.store.limits` asks: all
of it when nothing was committed (a duplicate tx_id, a lost store) or a resend or fallback did not
send (refused, 4302, 4150), the sends of a start that sent nothing (refused by the carrier). A
request over a limit raises `LimitedError` and changes nothing: no verification is created, no
code drawn, no resend spent, nothing sent.
"""

from __future__ import annotations

from typing import NoReturn

from machines.core import Decision, deadline_passed
from machines.effects import PlaceCall, SendPush, SendSms
from machines.events import Event
from machines.record import Verification
from machines.vocabulary import Status
from service.errors import LimitedError, RecordMovedOnError
from service.limits import Refusal
from service.runtime import Runtime
from service.store.limits import SEND_LIMITS, Grant

SENDING_EFFECTS = (SendSms, PlaceCall, SendPush)


def sends(decision: Decision) -> bool:
    """Whether the decision asks an upstream for an SMS, a call or a push."""
    return any(isinstance(effect, SENDING_EFFECTS) for effect in decision.effects)


class Admission:
    """The limits' grant of one request of `client_id`; none until `start` or `send` takes one."""

    def __init__(self, rt: Runtime, client_id: str) -> None:
        self.rt = rt
        self.client_id = client_id
        self.grant: Grant | None = None
        self._kind: str | None = None
        self.tx_id_held: Verification | None = None  # the new verification whose tx_id is held

    async def start(self, record: Verification, phone: str, ip: str | None, *, sending: bool) -> None:
        """Count the start of the new `record` (and, when `sending`, its first send), or raise
        LimitedError. Its tx_id is taken first (4007 when live elsewhere), so a duplicate start is
        answered as one and counts nothing, however many arrive at once."""
        if self.grant is not None:
            return
        if await self.rt.transactor.hold_tx_id(record):
            self.tx_id_held = record
        answer = await self.rt.limiter.acquire(client_id=self.client_id, phone=phone, ip=ip,
                                               verification_id=record.id, kind="start",
                                               sends=sending)
        self._take(answer, "start")

    async def send(self, record: Verification) -> None:
        """Count one send of `record` to its phone, or raise LimitedError (once per request)."""
        if self.grant is not None:
            return
        phone = self.rt.secrets.subject(record).phone
        answer = await self.rt.limiter.acquire(client_id=self.client_id, phone=phone, ip=None,
                                               verification_id=record.id, kind="send")
        if isinstance(answer, Refusal):
            await self._refuse(record, answer)
        self._take(answer, "send")

    async def admit(self, record: Verification, event: Event) -> None:
        """Before a resend's `event` is decided on `record`: a verification no longer pending gets its
        section 7 answer; one the machine would send for is counted once (`send`); one the event
        would end at its cap is refused when over a limit, counting nothing (`check_send`)."""
        if record.status is not Status.PENDING or deadline_passed(record, event.now_ms):
            return  # answered as section 7 says (a passed deadline expires it first)
        peek = self.rt.transactor.decide(record, event)  # pure: the same decision the commit makes
        if sends(peek):
            await self.send(record)
        elif peek.ended:
            await self.check_send(record)

    async def check_send(self, record: Verification) -> None:
        """Raise LimitedError when a send of `record` would be refused now, counting nothing (the
        answer that ends a verification at its cap comes after the limits)."""
        if self.grant is not None:
            return
        phone = self.rt.secrets.subject(record).phone
        refusal = await self.rt.limiter.check(client_id=self.client_id, phone=phone, ip=None,
                                              verification_id=record.id, kind="send")
        if refusal is not None:
            await self._refuse(record, refusal)

    async def _refuse(self, record: Verification, refusal: Refusal) -> NoReturn:
        """A limit's refusal of a send decided on `record`, given only while `record` is the
        stored one. When a simultaneous request has moved it on (ten resends at once: one
        placed the call, and its send filled a limit), the step is decided again on the
        record that won, so the others get the machine's answer to it (409) and not a 429 for
        a send they would not have made. One read, on the refusal's path only."""
        current = await self.rt.store.load(record.id)
        if current is not None and current.version != record.version:
            raise RecordMovedOnError(current)
        raise LimitedError(refusal.limit, refusal.retry_after_s)

    def _take(self, answer: Grant | Refusal, kind: str) -> None:
        if isinstance(answer, Refusal):
            raise LimitedError(answer.limit, answer.retry_after_s)
        self.grant, self._kind = answer, kind

    async def settle(self, decision: Decision | None) -> None:
        """Give back what the request did not use; `decision` is None when nothing was committed."""
        held, self.tx_id_held = self.tx_id_held, None
        if decision is None and held is not None:
            await self.rt.transactor.drop_tx_id(held)
        grant = self.grant
        if grant is None:
            return
        if decision is not None and sends(decision):
            return
        self.grant = None
        if decision is not None and self._kind == "start":
            # A verification was created and refused (by the carrier, say): it was a start, but
            # nothing was sent.
            await self.rt.limiter.release(grant, limits=SEND_LIMITS)
            return
        await self.rt.limiter.release(grant)
