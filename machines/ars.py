"""ARS: the service places a phone call, the user keys in the digits shown on the screen.

start -> calling -> verified, with the call centre's report (a signed webhook) deciding:
success verifies at once; `4602` (wrong digits) leaves it pending in `wrong_digits`, where a
resend places a new call with new digits while calls remain (`max_calls` counts every call) and
the 4602 of the last allowed call ends it `4301`; every other call outcome ends it with its code.
Asking for the result before it arrives is 4500, a new call while one rings is 4501, after a
successful call 4502. A report names its call by generation: a late report of an old call
changes nothing.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData

from machines import fallback, reports
from machines.common import grant, open_session, refused, reply, reply_last_code, resends_remain, spend_resend
from machines.core import FAILED, FINISHED_STATES, NEW, VERIFIED, Reply, model
from machines.effects import PlaceCall
from machines.events import CallAgain, NewCall, ProviderReport, StartCall
from machines.record import Verification
from machines.vocabulary import Code

CALLING = "calling"
WRONG_DIGITS = "wrong_digits"
CALL_RESULT = "ars.call_result"  # the provider event type of a call's outcome
CALL_OUTCOMES = frozenset({"4604", "4610", "4611", "4612", "4613", "4620", "4624", "4641", "4642",
                           "4698", "4699"})  # outcomes that end the verification with their own code


def open_call_session(ev: EventData) -> None:
    open_session(ev)
    model(ev).update(attempts_left=None)  # no typed code: only the calls are counted


def place_call(ev: EventData) -> None:
    flow = model(ev)
    event = flow.event
    call: NewCall | None = event.call if isinstance(event, StartCall | CallAgain) else None
    assert call is not None  # noqa: S101 - the shell draws digits with every start and new call
    generation = flow.record.call_generation + 1
    flow.update(call_generation=generation, display_code=call.display_code, last_code=None,
                last_detail_code=None)
    flow.effects.append(PlaceCall(generation, call.sealed_code))
    flow.reply = Reply()


def call_generation(record: Verification) -> int:
    return record.call_generation


def report(ev: EventData) -> ProviderReport | None:
    return reports.current(ev, CALL_RESULT, call_generation)


reported_success = reports.reported(CALL_RESULT, call_generation, Code.SUCCESS)
reported_wrong_digits = reports.reported(CALL_RESULT, call_generation, Code.ARS_WRONG_DIGITS)
reported_call_outcome = reports.reported(CALL_RESULT, call_generation, *CALL_OUTCOMES)


def note_wrong_digits(ev: EventData) -> None:
    model(ev).update(last_code=Code.ARS_WRONG_DIGITS, last_detail_code=None)
    model(ev).reply = Reply(Code.ARS_WRONG_DIGITS)


def exhaust_calls(ev: EventData) -> None:
    model(ev).update(resends_left=0)


def fail_with_report(ev: EventData) -> None:
    found = report(ev)
    assert found is not None  # noqa: S101 - guarded by reported_call_outcome
    fallback.end_offering_fallback(model(ev), found.code, found.detail_code)


PENDING_STATES = [CALLING, WRONG_DIGITS]

TRANSITIONS: list[dict[str, Any]] = [
    *fallback.FALLBACK_TRANSITIONS,
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [refused],
     "after": [fallback.fail_with_refusal]},
    {"trigger": "start", "source": NEW, "dest": CALLING, "after": [open_call_session, place_call]},
    {"trigger": "confirm", "source": CALLING, "dest": None, "after": [reply(Code.ARS_NO_RESULT)]},
    {"trigger": "confirm", "source": WRONG_DIGITS, "dest": None, "after": [reply_last_code]},
    {"trigger": "resend", "source": CALLING, "dest": None, "after": [reply(Code.ARS_CALL_IN_PROGRESS)]},
    {"trigger": "resend", "source": WRONG_DIGITS, "dest": CALLING, "conditions": [resends_remain],
     "after": [spend_resend, place_call]},
    {"trigger": "resend", "source": WRONG_DIGITS, "dest": FAILED,
     "after": [fallback.fail_offering_fallback(Code.TOO_MANY_ATTEMPTS)]},
    {"trigger": "report", "source": CALLING, "dest": VERIFIED, "conditions": [reported_success],
     "after": [grant]},
    {"trigger": "report", "source": CALLING, "dest": WRONG_DIGITS,
     "conditions": [reported_wrong_digits, resends_remain], "after": [note_wrong_digits]},
    {"trigger": "report", "source": CALLING, "dest": FAILED, "conditions": [reported_wrong_digits],
     "before": [exhaust_calls], "after": [fallback.fail_offering_fallback(Code.TOO_MANY_ATTEMPTS)]},
    {"trigger": "report", "source": CALLING, "dest": FAILED, "conditions": [reported_call_outcome],
     "after": [fail_with_report]},
    {"trigger": "report", "source": [NEW, *PENDING_STATES, VERIFIED, *FINISHED_STATES], "dest": None,
     "after": [reports.ignore]},
    *fallback.refuse_fallback_transitions(PENDING_STATES),
]
