"""Effects are data: a decision lists them, the shell commits them with the state and performs them.

Timers are addressed by (kind, due): a timer that fires after its record moved on finds a
different deadline on the record and does nothing, so stale timers are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from machines.motp_user import MotpUser
from machines.vocabulary import TimerKind


@dataclass(frozen=True, slots=True)
class SendSms:
    """Deliver code generation `generation`; the code travels sealed, never in plain text."""

    generation: int
    sealed_code: str


@dataclass(frozen=True, slots=True)
class Notify:
    """POST the verification as it now stands to the client's callback URL."""


@dataclass(frozen=True, slots=True)
class ArmTimer:
    kind: TimerKind
    due_ms: int


@dataclass(frozen=True, slots=True)
class DisarmTimer:
    kind: TimerKind
    due_ms: int


@dataclass(frozen=True, slots=True)
class SaveMotpUser:
    """Write the mOTP user with the verification, compare-and-set on the version `before` had."""

    before: MotpUser
    after: MotpUser



@dataclass(frozen=True, slots=True)
class PlaceCall:
    """Place ARS call `generation`; the digits travel sealed, like an SMS code."""

    generation: int
    sealed_code: str


@dataclass(frozen=True, slots=True)
class SendPush:
    """Send PASS push `generation` to the subject's phone."""

    generation: int


Effect = SendSms | Notify | ArmTimer | DisarmTimer | SaveMotpUser | PlaceCall | SendPush
