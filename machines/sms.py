"""SMS: a code sent by text message, typed back by the user.

start -> code_sent -> verified -> completed, with the caps of the source catalog:
3 wrong codes end it (4301), 3 resends and the 4th ends it (4302), a resend replaces the code,
the carrier's subscriber check refuses at start (2910, 4016) and its add-on checks hold a
matching code at confirm (4022, 4023: the user finishes the add-on step and confirms again).
"""

from __future__ import annotations

import hmac
from typing import Any

from transitions import EventData

from machines.common import (
    fail_with,
    fail_with_refusal,
    grant,
    open_session,
    refusal_of,
    refused,
    resends_remain,
    spend_resend,
)
from machines.core import FAILED, NEW, VERIFIED, Reply, model
from machines.effects import SendSms
from machines.events import Confirm, IssuedCode
from machines.record import Verification
from machines.vocabulary import Code

CODE_SENT = "code_sent"


def code_matches(record: Verification, code_hash: str | None) -> bool:
    """Constant-time comparison of keyed hashes. The shell uses it too, to ask the carrier only
    about a code that matches."""
    if code_hash is None or record.code_hash is None:
        return False
    return hmac.compare_digest(code_hash, record.code_hash)


def submitted_code_matches(ev: EventData) -> bool:
    event = model(ev).event
    return isinstance(event, Confirm) and code_matches(model(ev).record, event.code_hash)


def attempts_remain(ev: EventData) -> bool:
    return (model(ev).record.attempts_left or 0) > 1


def send_new_code(ev: EventData) -> None:
    """Replace the code: only the newest one is accepted from now on."""
    flow = model(ev)
    issued: IssuedCode | None = getattr(flow.event, "issued_code", None)
    assert issued is not None  # noqa: S101 - the shell issues a code with every start and resend
    generation = flow.record.code_generation + 1
    flow.update(code_generation=generation, code_hash=issued.code_hash)
    flow.effects.append(SendSms(generation, issued.sealed_code))
    flow.reply = Reply()


def count_wrong_code(ev: EventData) -> None:
    flow = model(ev)
    flow.update(attempts_left=(flow.record.attempts_left or 0) - 1, last_code=Code.WRONG_CODE,
                last_detail_code=None)
    flow.reply = Reply(Code.WRONG_CODE)


def hold_for_addon_check(ev: EventData) -> None:
    """The code is right but the carrier's add-on check is not done, or the carrier's own check of
    the code failed (2910/code_mismatch): the user may confirm again."""
    flow = model(ev)
    refusal = refusal_of(flow)
    flow.update(last_code=refusal.code, last_detail_code=refusal.detail_code, last_variant=refusal.variant)
    flow.reply = Reply(refusal.code, refusal.detail_code, variant=refusal.variant)


def exhaust_attempts(ev: EventData) -> None:
    model(ev).update(attempts_left=0)


TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [refused],
     "after": [fail_with_refusal]},
    {"trigger": "start", "source": NEW, "dest": CODE_SENT, "after": [open_session, send_new_code]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": VERIFIED,
     "conditions": [submitted_code_matches], "unless": [refused], "after": [grant]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": None,
     "conditions": [submitted_code_matches], "after": [hold_for_addon_check]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": None,
     "conditions": [attempts_remain], "after": [count_wrong_code]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": FAILED,
     "before": [exhaust_attempts], "after": [fail_with(Code.TOO_MANY_ATTEMPTS)]},
    {"trigger": "resend", "source": CODE_SENT, "dest": None,
     "conditions": [resends_remain], "after": [spend_resend, send_new_code]},
    {"trigger": "resend", "source": CODE_SENT, "dest": FAILED,
     "after": [fail_with(Code.TOO_MANY_RESENDS)]},
]
