"""How a channel machine decides: a `transitions` machine built once, a fresh model per decision.

Each channel declares its pending states and transitions; this module adds what every
channel shares (deadlines, cancel, redeem, and the answers of contract section 7 to a
verification that is no longer pending) and runs one decision:

    decide(record, event, policy) -> Decision(record, reply, effects)

Callbacks are pure: they compute the next record, the reply and the effects on the model
object, which lives for one decision only (never shared between requests).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine, MachineError

from machines.effects import ArmTimer, DisarmTimer, Effect, Notify
from machines.events import TRIGGERS, Event, Refusal, Tick, TimerFired
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Code, Status, TimerKind

NEW = "new"
VERIFIED = "verified"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
CANCELED = "canceled"
FINISHED_STATES = (COMPLETED, FAILED, EXPIRED, CANCELED)
FINISHED_STATUSES = {
    COMPLETED: Status.COMPLETED,
    FAILED: Status.FAILED,
    EXPIRED: Status.EXPIRED,
    CANCELED: Status.CANCELED,
}

Callback = Callable[[EventData], Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the caller is answered. No code means success."""

    code: str | None = None
    detail_code: str | None = None
    http_status: int | None = None  # None: the catalog's status for the code

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class Decision:
    before: Verification
    record: Verification
    reply: Reply
    effects: tuple[Effect, ...]

    @property
    def changed(self) -> bool:
        return self.record != self.before or bool(self.effects)

    @property
    def ended(self) -> bool:
        """True when this decision made a live verification terminal."""
        return self.before.is_live and not self.record.is_live


class Flow:
    """The model `transitions` drives for one decision.

    Callbacks' changes to the record are gathered and applied in one `replace` when the record is
    next read: a decision makes several small updates, and copying a 30-field record for each
    was a measurable part of every request."""

    __slots__ = ("_changes", "_record", "effects", "event", "policy", "reply", "state")

    def __init__(self, state: str, record: Verification, event: Event, policy: Policy) -> None:
        self.state = state
        self._record = record
        self._changes: dict[str, Any] = {}
        self.event = event
        self.policy = policy
        self.effects: list[Effect] = []
        self.reply = Reply()

    @property
    def record(self) -> Verification:
        if self._changes:
            self._record = dataclasses.replace(self._record, **self._changes)
            self._changes = {}
        return self._record

    def update(self, **changes: Any) -> None:
        self._changes.update(changes)


def model(ev: EventData) -> Flow:
    flow = ev.model
    assert isinstance(flow, Flow)  # noqa: S101 - the machine only ever drives a Flow
    return flow


def named(name: str, fn: Callback) -> Callback:
    """Give a generated callback a stable name: it appears in diagrams and the definition hash."""
    fn.__name__ = fn.__qualname__ = name
    return fn


def reply(code: Code, http_status: int | None = None) -> Callback:
    def answer(ev: EventData) -> None:
        model(ev).reply = Reply(code, http_status=http_status)

    return named(f"reply_{code}" + (f"_{http_status}" if http_status else ""), answer)


def reply_last_code(ev: EventData) -> None:
    """A failed verification answers every request with the code that ended it."""
    record = model(ev).record
    model(ev).reply = Reply(record.last_code, record.last_detail_code)


def reply_read(ev: EventData) -> None:
    """Answer with the verification as it stands (ARS/PASS confirm once verified)."""
    model(ev).reply = Reply()


# ---- shared building blocks for channel definitions ----


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


def finish(flow: Flow, code: str | None, detail_code: str | None = None) -> None:
    """End the verification: forget personal data and secrets, stop its timers, tell the client."""
    record = flow.record
    if record.status is Status.VERIFIED and record.result_expires_at:
        flow.effects.append(DisarmTimer(TimerKind.RESULT, record.result_expires_at))
    elif record.expires_at:
        flow.effects.append(DisarmTimer(TimerKind.SESSION, record.expires_at))
    flow.effects.append(Notify())
    changes: dict[str, Any] = {"ended_at": now_ms(flow), "subject": None, "code_hash": None}
    if code is not None:
        changes.update(last_code=code, last_detail_code=detail_code)
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
    finish(flow, refusal.code, refusal.detail_code)
    flow.reply = Reply(refusal.code, refusal.detail_code)


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
        {"trigger": "resend", "source": [EXPIRED, CANCELED, NEW], "dest": None,
         "after": [reply(Code.UNKNOWN_FOR_RESEND, 404)]},
    ]


def fail_with_expiry(code: Code) -> Callback:
    def expire(ev: EventData) -> None:
        finish(model(ev), code)

    return named(f"expire_{code}", expire)


def deadline_passed(record: Verification, now_ms: int) -> bool:
    """Whether any deadline a channel's `expire` transitions look at has passed: when none has,
    `expire` would change nothing, and the machine need not be asked (a hot-path saving)."""
    deadlines = (record.expires_at or None, record.result_expires_at, record.push_expires_at)
    return any(deadline is not None and now_ms >= deadline for deadline in deadlines)


class UndefinedTransitionError(RuntimeError):
    """A (state, event) pair the definition does not answer: a bug in a machine definition."""


class ChannelMachine:
    """One channel's definition, built once at import; it decides for any number of records."""

    def __init__(
        self,
        channel: Channel,
        pending: Mapping[str, Status],
        transitions: Iterable[dict[str, Any]],
    ) -> None:
        self.channel = channel
        self.statuses: dict[str, Status] = {NEW: Status.PENDING, **pending, **FINISHED_STATUSES}
        self.statuses[VERIFIED] = Status.VERIFIED
        self.transitions = list(transitions)
        self.machine = Machine(
            model=None,
            states=list(self.statuses),
            transitions=self.transitions,
            initial=None,
            auto_transitions=False,
            send_event=True,
        )
        self.version = definition_hash(self.transitions)

    @property
    def triggers(self) -> list[str]:
        return sorted(self.machine.events)

    def decide(self, record: Verification, event: Event, policy: Policy) -> Decision:
        if record.state not in self.statuses:
            # Written by another definition (the record keeps its hash) whose states this one
            # does not know: refuse loudly rather than misread it.
            msg = (f"{self.channel}: state {record.state!r} of definition {record.definition!r} "
                   f"is unknown to definition {self.version!r}")
            raise UndefinedTransitionError(msg)
        flow = Flow(state=record.state, record=record, event=event, policy=policy)
        if deadline_passed(record, event.now_ms):
            self._fire(flow, "expire")  # the clock catches up before anything else
        if not isinstance(event, (TimerFired, Tick)):
            self._fire(flow, TRIGGERS[type(event)])
        flow.update(state=flow.state, status=self.statuses[flow.state], definition=self.version)
        after = flow.record
        return Decision(record, after, flow.reply, tuple(flow.effects))

    def _fire(self, flow: Flow, trigger: str) -> None:
        try:
            self.machine.events[trigger].trigger(flow)
        except (MachineError, KeyError) as exc:
            msg = f"{self.channel}: no transition for {trigger!r} from {flow.state!r}"
            raise UndefinedTransitionError(msg) from exc


def definition_hash(transitions: Iterable[dict[str, Any]]) -> str:
    """A short hash of the definition's shape, stored with each record it writes."""

    def name(value: Any) -> Any:
        if callable(value):
            return getattr(value, "__qualname__", repr(value))
        if isinstance(value, list | tuple):
            return [name(v) for v in value]
        return value

    canonical = repr([sorted((k, name(v)) for k, v in t.items()) for t in transitions])
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
