"""What the API prepares for the ARS and PASS channels before the machine decides: the subject's
age and the upstream's check at start, the digits of a new call, a new push."""

from __future__ import annotations

from collections.abc import Callable

from machines.age import is_younger_than
from machines.events import CallAgain, Event, IssuedCode, NewCall, Refusal, Resend, Start, StartCall
from machines.record import Verification
from machines.vocabulary import Channel, Code
from service.call_effects import call_seal_context
from service.crypto import new_code
from service.providers.ports import Subscriber
from service.runtime import Runtime

CODELESS = frozenset({Channel.ARS, Channel.PASS})  # confirm asks whether the user has finished


def new_call(rt: Runtime, verification_id: str, generation: int) -> NewCall:
    """Draw the digits of call `generation`: shown on the screen, sealed for the call centre."""
    display_code = new_code(rt.settings.ars.display_code_length)
    sealed = rt.secrets.seal(display_code.encode(), call_seal_context(verification_id, generation))
    return NewCall(display_code, sealed)


async def refusal_at_start(rt: Runtime, channel: Channel, verification_id: str, subject: Subscriber,
                           now_ms: int) -> Refusal | None:
    """PASS refuses a subject younger than the configured age without asking the upstream; otherwise
    the upstream's subscriber check answers (ProviderError when it cannot be reached)."""
    if channel is Channel.PASS and is_younger_than(rt.settings.pass_.min_age_years, subject.birth,
                                                   subject.gender_digit, now_ms):
        return Refusal(Code.APP_UNDER_AGE)
    return await rt.provider.check_subscriber(verification_id, channel.value, subject)


def start_event(rt: Runtime, channel: Channel, record: Verification, now_ms: int, refusal: Refusal | None,
                sms_code: Callable[[], IssuedCode]) -> Start | StartCall:
    """The channel's start event for `record` (new, or handed over by a fallback)."""
    if channel is Channel.ARS:
        call = None if refusal else new_call(rt, record.id, record.call_generation + 1)
        return StartCall(now_ms, call=call, refusal=refusal)
    if channel is Channel.PASS:
        return Start(now_ms, refusal=refusal)
    return Start(now_ms, issued_code=None if refusal else sms_code(), refusal=refusal)


def resend_event(rt: Runtime, record: Verification, now_ms: int) -> Event:
    """ARS: a new call with new digits; PASS: a new push."""
    if record.channel is Channel.ARS:
        return CallAgain(now_ms, new_call(rt, record.id, record.call_generation + 1))
    return Resend(now_ms)
