"""mOTP: the user types the 6-digit code their authenticator app shows (TOTP, RFC 6238).

start -> awaiting_code -> verified -> completed. The shell loads the user with every input and
tells the machine which time step in the window the code matches (or none); the machine
decides with the user's failure count, lock and last accepted step, and hands the changed
user back as an effect that is committed with the verification, compare-and-set on both.

- an unknown user, or a name or phone that differs from the registration: failed, AP005
- a locked user: failed, AP902 (at start, and at confirm when another verification locked it)
- a fresh matching step: verified; the count starts again and the step is spent
- a step at or before the last accepted one: AP901 (a code is accepted once); not counted,
  since only the user's own device can produce it
- any other code: AP901 and counted; the `max_verify_attempts`-th consecutive one locks the
  user and ends the verification AP902
"""

from __future__ import annotations

from typing import Any

from transitions import EventData

from machines import motp_user
from machines.common import fail_with, fail_with_refusal, grant, open_session, refused, reply
from machines.core import FAILED, NEW, VERIFIED, Flow, Reply, model
from machines.effects import SaveMotpUser
from machines.motp_user import MotpUser
from machines.vocabulary import Code

AWAITING_CODE = "awaiting_code"


def user_of(flow: Flow) -> MotpUser | None:
    user: MotpUser | None = getattr(flow.event, "user", None)
    return user


def the_user(flow: Flow) -> MotpUser:
    user = user_of(flow)
    assert user is not None  # noqa: S101 - guarded by the `user_missing` condition
    return user


def step_of(flow: Flow) -> int | None:
    step: int | None = getattr(flow.event, "step", None)
    return step


def user_missing(ev: EventData) -> bool:
    return user_of(model(ev)) is None


def user_locked(ev: EventData) -> bool:
    user = user_of(model(ev))
    return user is not None and user.locked


def fresh_step(ev: EventData) -> bool:
    step = step_of(model(ev))
    return step is not None and step > the_user(model(ev)).last_step


def spent_step(ev: EventData) -> bool:
    return step_of(model(ev)) is not None


def failures_remain(ev: EventData) -> bool:
    flow = model(ev)
    return the_user(flow).failures + 1 < flow.policy.max_verify_attempts


def save(flow: Flow, after: MotpUser) -> None:
    flow.effects.append(SaveMotpUser(the_user(flow), after))
    flow.update(attempts_left=max(flow.policy.max_verify_attempts - after.failures, 0))


def begin(ev: EventData) -> None:
    flow = model(ev)
    open_session(ev)
    left = flow.policy.max_verify_attempts - the_user(flow).failures
    flow.update(resends_left=None, attempts_left=left)
    flow.reply = Reply()


def accept(ev: EventData) -> None:
    flow = model(ev)
    step = step_of(flow)
    assert step is not None  # noqa: S101 - guarded by `fresh_step`
    save(flow, motp_user.accepted(the_user(flow), step))
    grant(ev)


def mismatch(flow: Flow) -> None:
    flow.update(last_code=Code.MOTP_MISMATCH, last_detail_code=None)
    flow.reply = Reply(Code.MOTP_MISMATCH)


def refuse_spent_step(ev: EventData) -> None:
    mismatch(model(ev))


def count_failure(ev: EventData) -> None:
    flow = model(ev)
    save(flow, motp_user.failed(the_user(flow), flow.policy.max_verify_attempts, flow.event.now_ms))
    mismatch(flow)


def count_failure_and_lock(ev: EventData) -> None:
    flow = model(ev)
    save(flow, motp_user.failed(the_user(flow), flow.policy.max_verify_attempts, flow.event.now_ms))


TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [refused],
     "after": [fail_with_refusal]},
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [user_missing],
     "after": [fail_with(Code.MOTP_UNKNOWN_USER)]},
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [user_locked],
     "after": [fail_with(Code.MOTP_LOCKED)]},
    {"trigger": "start", "source": NEW, "dest": AWAITING_CODE, "after": [begin]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": FAILED, "conditions": [user_missing],
     "after": [fail_with(Code.MOTP_UNKNOWN_USER)]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": FAILED, "conditions": [user_locked],
     "after": [fail_with(Code.MOTP_LOCKED)]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": VERIFIED, "conditions": [fresh_step],
     "after": [accept]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": None, "conditions": [spent_step],
     "after": [refuse_spent_step]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": None, "conditions": [failures_remain],
     "after": [count_failure]},
    {"trigger": "confirm", "source": AWAITING_CODE, "dest": FAILED,
     "before": [count_failure_and_lock], "after": [fail_with(Code.MOTP_LOCKED)]},
    # The app shows the codes: there is nothing to send again.
    {"trigger": "resend", "source": AWAITING_CODE, "dest": None,
     "after": [reply(Code.INVALID_REQUEST)]},
]
