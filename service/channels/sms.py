"""SMS in the shell: draw and seal a code for each start and resend; hash a submitted code; ask the
carrier's add-on check for a code that matches (once per request, however many tries it takes).

With a code upstream configured (`providers.sms_upstream`, PortOne), the upstream checks the
subscriber, draws and sends the code at start and at each resend, and judges the typed code at
confirm; its verdict is asked once per request (a retry after a lost race reuses it), and only
while the verification waits for a code (a resend only while resends remain)."""

from __future__ import annotations

from typing import Any

from machines import sms
from machines.events import Confirm, Event, IssuedCode, Refusal, Resend, Start
from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.api import validation
from service.channels.base import EventBuilder, SubscriberChannel
from service.crypto import code_context, new_code
from service.errors import ProviderError
from service.providers.code_upstream import CodeUpstream
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
        upstream = rt.providers.code_upstream
        if upstream is not None:  # the upstream checks the subscriber itself, and sends the code
            answer = await upstream.request_code(record.id, subject, record.service_name)
            if isinstance(answer, Refusal):
                return Start(now_ms, refusal=answer)
            return Start(now_ms, upstream_id=answer)
        refusal = await rt.providers.carriers.check_subscriber(record.id, self.channel.value, subject)
        issued = None if refusal else issue_code(rt, record.id, record.code_generation + 1)
        return Start(now_ms, issued_code=issued, refusal=refusal)

    def confirm(self, rt: Runtime, body: dict[str, Any]) -> EventBuilder:
        addon_checks: dict[tuple[int, str], Refusal | None] = {}
        verdicts: dict[str, Refusal | None] = {}

        async def event(record: Verification) -> Event:
            code = validation.code(body)
            if record.upstream_id is not None:
                if record.status is not Status.PENDING or rt.clock.now_ms() >= record.expires_at:
                    return Confirm(rt.clock.now_ms(), checked_upstream_id=record.upstream_id)
                if record.upstream_id not in verdicts:  # asked once per request and code
                    verdicts[record.upstream_id] = await code_upstream(rt).confirm_code(record.upstream_id, code)
                return Confirm(rt.clock.now_ms(), refusal=verdicts[record.upstream_id],
                               checked_upstream_id=record.upstream_id)
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
        asked: dict[int, str | Refusal] = {}

        async def event(record: Verification) -> Event:
            now = rt.clock.now_ms()
            if record.upstream_id is None:
                return Resend(now, issue_code(rt, record.id, record.code_generation + 1))
            if record.status is not Status.PENDING or not record.resends_left or now >= record.expires_at:
                return Resend(now)  # the machine answers (4302, contract section 7); nothing is sent
            generation = record.code_generation
            if generation not in asked:  # once per request and code replaced
                asked[generation] = await code_upstream(rt).request_code(
                    record.id, rt.secrets.subject(record), record.service_name)
            answer = asked[generation]
            if isinstance(answer, Refusal):
                return Resend(now, refusal=answer)
            return Resend(now, upstream_id=answer)

        return event


def code_upstream(rt: Runtime) -> CodeUpstream:
    upstream = rt.providers.code_upstream
    if upstream is None:  # the verification started with an upstream no longer configured
        msg = "no code upstream is configured for a verification it started"
        raise ProviderError(msg)
    return upstream


SMS = SmsChannel()
