"""What every channel's definition shares: replies, the session clock, granting, ending, and the
transitions of deadlines, cancel, redeem and contract section 7 (a verification no longer pending).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transitions import EventData

from machines.core import (
    CANCELED,
    COMPLETED,
    EXPIRED,
    FAILED,
    FINISHED_STATES,
    NEW,
    VERIFIED,
    Callback,
    Flow,
    Reply,
    model,
    named,
)
from machines.effects import ArmTimer, DisarmTimer, Notify
from machines.events import Refusal
from machines.vocabulary import Code, Status, TimerKind


def reply(code: Code, http_status: int | None = None, detail_code: str | None = None) -> Callback:
    def answer(ev: EventData) -> None:
        model(ev).reply = Reply(code, detail_code, http_status=http_status)

    name = f"reply_{code}" + (f"_detail_{detail_code}" if detail_code else "")
    return named(name + (f"_{http_status}" if http_status else ""), answer)


def reply_last_code(ev: EventData) -> None:
    """A failed verification answers every request with the code that ended it."""
    record = model(ev).record
    model(ev).reply = Reply(record.last_code, record.last_detail_code, variant=record.last_variant)


def reply_read(ev: EventData) -> None:
    """Answer with the verification as it stands (ARS/PASS confirm once verified)."""
    model(ev).reply = Reply()




# The detail codes of 4003 (a resend that finds no live verification); the shell answers 4004
# (`RESEND_DETAIL_UNKNOWN`) for an id that names none of the client's verifications.
RESEND_DETAIL_EXPIRED = "4002"
RESEND_DETAIL_CANCELED = "4003"
RESEND_DETAIL_UNKNOWN = "4004"


def now_ms(flow: Flow) -> int:
    return flow.event.now_ms


def open_session(ev: EventData) -> None:
    """Start the session clock and the caps; the record keeps them so later config changes don't."""
    flow = model(ev)
    deadline = now_ms(flow) + flow.policy.session_ttl_s * 1000
    flow.update(
        expires_at=deadline,
        attempts_left=flow.policy.max_verify_attempts,
        resends_left=flow.policy.max_resends,
    )
    flow.effects.append(ArmTimer(TimerKind.SESSION, deadline))


def grant(ev: EventData) -> None:
    """Identity proven: the key token becomes redeemable for result_ttl_s."""
    flow = model(ev)
    now = now_ms(flow)
    deadline = now + flow.policy.result_ttl_s * 1000
    flow.effects.append(DisarmTimer(TimerKind.SESSION, flow.record.expires_at))
    flow.effects.append(ArmTimer(TimerKind.RESULT, deadline))
    flow.effects.append(Notify())
    flow.update(
        verified_at=now,
        result_expires_at=deadline,
        code_hash=None,
        last_code=Code.SUCCESS,
        last_detail_code=None,
    )
    flow.reply = Reply()


def finish(flow: Flow, code: str | None, detail_code: str | None = None, variant: str | None = None) -> None:
    """End the verification: forget personal data and secrets, stop its timers, tell the client."""
    record = flow.record
    if record.status is Status.VERIFIED and record.result_expires_at:
        flow.effects.append(DisarmTimer(TimerKind.RESULT, record.result_expires_at))
    elif record.expires_at:
        flow.effects.append(DisarmTimer(TimerKind.SESSION, record.expires_at))
    flow.effects.append(Notify())
    changes: dict[str, Any] = {"ended_at": now_ms(flow), "subject": None, "code_hash": None}
    if code is not None:
        changes.update(last_code=code, last_detail_code=detail_code, last_variant=variant)
    flow.update(**changes)


def fail_with(code: Code) -> Callback:
    """End as `failed` with `code`, and answer with it."""

    def fail(ev: EventData) -> None:
        finish(model(ev), code)
        model(ev).reply = Reply(code)

    return named(f"fail_{code}", fail)


def fail_with_refusal(ev: EventData) -> None:
    flow = model(ev)
    refusal = refusal_of(flow)
    finish(flow, refusal.code, refusal.detail_code, refusal.variant)
    flow.reply = Reply(refusal.code, refusal.detail_code, variant=refusal.variant)


def refusal_of(flow: Flow) -> Refusal:
    refusal: Refusal | None = getattr(flow.event, "refusal", None)
    assert refusal is not None  # noqa: S101 - guarded by the `refused` condition
    return refusal


def refused(ev: EventData) -> bool:
    return getattr(model(ev).event, "refusal", None) is not None


def session_over(ev: EventData) -> bool:
    flow = model(ev)
    return flow.record.expires_at > 0 and now_ms(flow) >= flow.record.expires_at


def result_over(ev: EventData) -> bool:
    flow = model(ev)
    deadline = flow.record.result_expires_at
    return deadline is not None and now_ms(flow) >= deadline


def token_ok(ev: EventData) -> bool:
    return bool(getattr(model(ev).event, "token_ok", False))


def redeem(ev: EventData) -> None:
    finish(model(ev), None)
    model(ev).reply = Reply()


def cancel(ev: EventData) -> None:
    finish(model(ev), None)
    model(ev).reply = Reply()


def common_transitions(
    pending: Sequence[str],
    *,
    expiry_code: Code,
    confirm_when_verified: Callback,
    resend_when_verified: Callback,
) -> list[dict[str, Any]]:
    """What every channel shares: deadlines, cancel, redeem and contract section 7."""
    live = [*pending, VERIFIED]
    return [
        # Deadlines: every input runs `expire` first, so the clock is checked on every read.
        {"trigger": "expire", "source": list(pending), "dest": EXPIRED,
         "conditions": [session_over], "after": [fail_with_expiry(expiry_code)]},
        {"trigger": "expire", "source": VERIFIED, "dest": EXPIRED,
         "conditions": [result_over], "after": [fail_with_expiry(Code.RESULT_GONE)]},
        {"trigger": "expire", "source": [NEW, *live, *FINISHED_STATES], "dest": None},
        # Starting twice cannot happen through the API; the table answers it anyway.
        {"trigger": "start", "source": [*live, *FINISHED_STATES], "dest": None,
         "after": [reply(Code.DUPLICATE_TX_ID)]},
        # Cancel: any live verification; a finished one is 409.
        {"trigger": "cancel", "source": live, "dest": CANCELED, "after": [cancel]},
        {"trigger": "cancel", "source": list(FINISHED_STATES), "dest": None,
         "after": [reply(Code.ALREADY_COMPLETED, 409)]},
        {"trigger": "cancel", "source": NEW, "dest": None,
         "after": [reply(Code.UNKNOWN_VERIFICATION)]},
        # Redeem the key token once, while verified.
        {"trigger": "redeem", "source": VERIFIED, "dest": COMPLETED,
         "conditions": [token_ok], "after": [redeem]},
        {"trigger": "redeem", "source": [NEW, *live, *FINISHED_STATES], "dest": None,
         "after": [reply(Code.RESULT_GONE)]},
        # Contract section 7: requests to a verification that is no longer pending.
        {"trigger": "confirm", "source": VERIFIED, "dest": None, "after": [confirm_when_verified]},
        {"trigger": "resend", "source": VERIFIED, "dest": None, "after": [resend_when_verified]},
        {"trigger": "confirm", "source": COMPLETED, "dest": None,
         "after": [reply(Code.ALREADY_COMPLETED, 409)]},
        {"trigger": "resend", "source": COMPLETED, "dest": None,
         "after": [reply(Code.ALREADY_COMPLETED, 409)]},
        {"trigger": "confirm", "source": FAILED, "dest": None, "after": [reply_last_code]},
        {"trigger": "resend", "source": FAILED, "dest": None, "after": [reply_last_code]},
        {"trigger": "confirm", "source": [EXPIRED, CANCELED, NEW], "dest": None,
         "after": [reply(Code.NOT_CONFIRMABLE, 404)]},
        # 4003's detail codes: 4002 the session lapsed, 4003 the client canceled it (the progress
        # kept at the request is gone either way), 4004 no such request (the shell answers it).
        {"trigger": "resend", "source": EXPIRED, "dest": None,
         "after": [reply(Code.UNKNOWN_FOR_RESEND, 404, RESEND_DETAIL_EXPIRED)]},
        {"trigger": "resend", "source": [CANCELED, NEW], "dest": None,
         "after": [reply(Code.UNKNOWN_FOR_RESEND, 404, RESEND_DETAIL_CANCELED)]},
    ]


def fail_with_expiry(code: Code) -> Callback:
    def expire(ev: EventData) -> None:
        finish(model(ev), code)

    return named(f"expire_{code}", expire)


def resends_remain(ev: EventData) -> bool:
    return (model(ev).record.resends_left or 0) > 0


def spend_resend(ev: EventData) -> None:
    flow = model(ev)
    flow.update(resends_left=(flow.record.resends_left or 0) - 1)
