"""SMS in the shell: draw and seal a code for each start and resend; hash a submitted code; ask the
carrier's add-on check for a code that matches (once per request, however many tries it takes)."""

from __future__ import annotations

from typing import Any

from machines import sms
from machines.events import Confirm, Event, IssuedCode, Refusal, Resend, Start
from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.api import validation
from service.channels.base import EventBuilder, SubscriberChannel
from service.crypto import code_context, new_code
from service.providers.ports import Subscriber
from service.runtime import Runtime


def issue_code(rt: Runtime, verification_id: str, generation: int) -> IssuedCode:
    """Draw a code for `generation`: keep its keyed hash, seal it for the outbox, forget it."""
    code = new_code(rt.settings.sms.code_length)
    return IssuedCode(
        code_hash=rt.secrets.code_hash(verification_id, generation, code),
        sealed_code=rt.secrets.seal(code.encode(), code_context(verification_id, generation)),
    )


class SmsChannel(SubscriberChannel):
    channel = Channel.SMS

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        refusal = await rt.providers.carriers.check_subscriber(record.id, self.channel.value, subject)
        issued = None if refusal else issue_code(rt, record.id, record.code_generation + 1)
        return Start(now_ms, issued_code=issued, refusal=refusal)

    def confirm(self, rt: Runtime, body: dict[str, Any]) -> EventBuilder:
        addon_checks: dict[tuple[int, str], Refusal | None] = {}

        async def event(record: Verification) -> Event:
            code = validation.code(body)
            code_hash = rt.secrets.code_hash(record.id, record.code_generation, code)
            refusal = None
            if record.status is Status.PENDING and sms.code_matches(record, code_hash):
                # Only a matching code is worth the carrier's add-on check, and only once.
                asked = (record.code_generation, code_hash)
                if asked not in addon_checks:
                    phone = rt.secrets.subject(record).phone
                    addon_checks[asked] = await rt.providers.carriers.check_addons(record.id, phone)
                refusal = addon_checks[asked]
            return Confirm(rt.clock.now_ms(), code_hash=code_hash, refusal=refusal)

        return event

    def resend(self, rt: Runtime) -> EventBuilder:
        async def event(record: Verification) -> Event:
            return Resend(rt.clock.now_ms(), issue_code(rt, record.id, record.code_generation + 1))

        return event


SMS = SmsChannel()
