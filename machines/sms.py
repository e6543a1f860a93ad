"""SMS: a code sent by text message, typed back by the user.

start -> code_sent -> verified -> completed, with the caps of the source catalog:
3 wrong codes end it (4301), 3 resends and the 4th ends it (4302), a resend replaces the code,
the carrier's subscriber check refuses at start (2910, 4016) and its add-on checks hold a
matching code at confirm (4022, 4023: the user finishes the add-on step and confirms again).

Two modes, with the same caps, codes and states; the events say which one a verification is in.
- veriflow draws the code: `Start`/`Resend` carry an `IssuedCode` (its keyed hash is kept, its
  sealed copy goes out by SMS) and `Confirm` the keyed hash of the typed code.
- The upstream draws, sends and checks the code (PortOne): `Start`/`Resend` carry the upstream's
  id of the code it sent (`upstream_id`, kept on the record), and `Confirm` the upstream's verdict
  on that id (`checked_upstream_id`, `refusal`). No verdict: verified. The carrier-side mismatch
  (`Refusal("2910", variant="code_mismatch")`) counts as a wrong code against the attempts, as
  a local mismatch does (4013, then 4301). Any other refusal of the upstream at confirm (4018:
  it no longer knows the request) is answered without spending an attempt; the session clock
  still ends the verification. A refusal to send a new code ends it with that code.
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
from machines.events import Confirm, IssuedCode, Refusal
from machines.record import Verification
from machines.vocabulary import Code

CODE_SENT = "code_sent"
CODE_MISMATCH = Refusal("2910", variant="code_mismatch")


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


def issued_by_upstream(ev: EventData) -> bool:
    return getattr(model(ev).event, "upstream_id", None) is not None


def note_upstream_code(ev: EventData) -> None:
    """The upstream sent a new code under a new id: only that one is checked from now on."""
    flow = model(ev)
    upstream_id: str | None = getattr(flow.event, "upstream_id", None)
    assert upstream_id is not None  # noqa: S101 - guarded by issued_by_upstream
    flow.update(code_generation=flow.record.code_generation + 1, upstream_id=upstream_id, code_hash=None)
    flow.reply = Reply()


def upstream_verdict(ev: EventData) -> bool:
    """The event is the upstream's verdict on the code this verification currently waits for."""
    event, record = model(ev).event, model(ev).record
    checked = getattr(event, "checked_upstream_id", None)
    return checked is not None and record.upstream_id is not None and hmac.compare_digest(
        checked.encode(), record.upstream_id.encode())


def upstream_certified(ev: EventData) -> bool:
    return upstream_verdict(ev) and not refused(ev)


def upstream_refused_otherwise(ev: EventData) -> bool:
    """Refused for another reason than the code itself (which counts as a wrong code)."""
    return upstream_verdict(ev) and refused(ev) and refusal_of(model(ev)) != CODE_MISMATCH


def answer_upstream_refusal(ev: EventData) -> None:
    """The upstream could not check the code: answer its code; no attempt is spent."""
    flow = model(ev)
    refusal = refusal_of(flow)
    flow.update(last_code=refusal.code, last_detail_code=refusal.detail_code)
    flow.reply = Reply(refusal.code, refusal.detail_code)


def hold_for_addon_check(ev: EventData) -> None:
    """The code is right but the carrier's add-on check is not done: the user may confirm again."""
    flow = model(ev)
    refusal = refusal_of(flow)
    flow.update(last_code=refusal.code, last_detail_code=refusal.detail_code)
    flow.reply = Reply(refusal.code, refusal.detail_code)


def exhaust_attempts(ev: EventData) -> None:
    model(ev).update(attempts_left=0)


TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [refused],
     "after": [fail_with_refusal]},
    {"trigger": "start", "source": NEW, "dest": CODE_SENT, "conditions": [issued_by_upstream],
     "after": [open_session, note_upstream_code]},
    {"trigger": "start", "source": NEW, "dest": CODE_SENT, "after": [open_session, send_new_code]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": VERIFIED, "conditions": [upstream_certified],
     "after": [grant]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": None, "conditions": [upstream_refused_otherwise],
     "after": [answer_upstream_refusal]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": VERIFIED,
     "conditions": [submitted_code_matches], "unless": [refused], "after": [grant]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": None,
     "conditions": [submitted_code_matches], "after": [hold_for_addon_check]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": None,
     "conditions": [attempts_remain], "after": [count_wrong_code]},
    {"trigger": "confirm", "source": CODE_SENT, "dest": FAILED,
     "before": [exhaust_attempts], "after": [fail_with(Code.TOO_MANY_ATTEMPTS)]},
    {"trigger": "resend", "source": CODE_SENT, "dest": FAILED,
     "conditions": [resends_remain, refused], "after": [fail_with_refusal]},
    {"trigger": "resend", "source": CODE_SENT, "dest": None,
     "conditions": [resends_remain, issued_by_upstream], "after": [spend_resend, note_upstream_code]},
    {"trigger": "resend", "source": CODE_SENT, "dest": None,
     "conditions": [resends_remain], "after": [spend_resend, send_new_code]},
    {"trigger": "resend", "source": CODE_SENT, "dest": FAILED,
     "after": [fail_with(Code.TOO_MANY_RESENDS)]},
]
