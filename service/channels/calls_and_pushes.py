"""ARS and PASS in the shell: the upstream's check at start (and PASS's age rule), the digits of
each new call, a new push; confirm only asks whether the user has finished."""

from __future__ import annotations

from typing import Any

from machines.age import is_younger_than
from machines.events import CallAgain, Confirm, Event, NewCall, Refusal, Resend, Start, StartCall
from machines.record import Verification
from machines.vocabulary import Channel, Code
from service.channels.base import EventBuilder, SubscriberChannel
from service.crypto import call_context, new_code
from service.providers.ports import Subscriber
from service.runtime import Runtime


def new_call(rt: Runtime, verification_id: str, generation: int) -> NewCall:
    """Draw the digits of call `generation`: shown on the screen, sealed for the call centre."""
    display_code = new_code(rt.settings.ars.display_code_length)
    sealed = rt.secrets.seal(display_code.encode(), call_context(verification_id, generation))
    return NewCall(display_code, sealed)


class CodelessChannel(SubscriberChannel):
    """Confirm asks whether the user has finished: the answer comes from the record."""

    def confirm(self, rt: Runtime, body: dict[str, Any]) -> EventBuilder:  # noqa: ARG002 - no code to read
        async def event(_: Verification) -> Event:
            return Confirm(rt.clock.now_ms())

        return event


class ArsChannel(CodelessChannel):
    channel = Channel.ARS

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        refusal = await rt.providers.carriers.check_subscriber(record.id, self.channel.value, subject)
        call = None if refusal else new_call(rt, record.id, record.call_generation + 1)
        return StartCall(now_ms, call=call, refusal=refusal)

    def resend(self, rt: Runtime) -> EventBuilder:
        """A new call with new digits."""

        async def event(record: Verification) -> Event:
            return CallAgain(rt.clock.now_ms(), new_call(rt, record.id, record.call_generation + 1))

        return event


class PassChannel(CodelessChannel):
    channel = Channel.PASS

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        """PASS refuses a subject younger than the configured age without asking the upstream."""
        refusal: Refusal | None
        if is_younger_than(rt.settings.pass_.min_age_years, subject.birth, subject.gender_digit, now_ms):
            refusal = Refusal(Code.APP_UNDER_AGE)
        else:
            refusal = await rt.providers.carriers.check_subscriber(record.id, self.channel.value, subject)
        return Start(now_ms, refusal=refusal)

    def resend(self, rt: Runtime) -> EventBuilder:
        """A new push."""

        async def event(_: Verification) -> Event:
            return Resend(rt.clock.now_ms())

        return event


ARS = ArsChannel()
PASS = PassChannel()
