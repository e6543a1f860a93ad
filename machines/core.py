"""The pure machine core: a `transitions` machine built once per channel, a fresh model per decision.

    ChannelMachine.decide(record, event, policy) -> Decision(before, record, reply, effects, steps)

Callbacks are pure: they compute the next record, the reply and the effects on the model
object (`Flow`), which lives for one decision only (never shared between requests). What every
channel's definition shares is in `machines.common`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import EventData, Machine

from machines.compiled import compile_machine, fire
from machines.effects import Effect
from machines.events import TRIGGERS, Event, Tick, TimerFired
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status

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
    variant: str | None = None  # the catalog row of a code listed more than once; None: its first

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class Step:
    """One trigger of a decision that changed something (the audit trail's events): its states
    before and after, and the code it emitted (its answer's, else the record's new last code)."""

    at: int
    trigger: str
    source: str
    dest: str
    code: str | None = None
    detail_code: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    before: Verification
    record: Verification
    reply: Reply
    effects: tuple[Effect, ...]
    steps: tuple[Step, ...] = ()  # the triggers that changed something, in the order they fired
    # The fields the decision set (a superset of those it changed); None: any of them may differ.
    touched: frozenset[str] | None = None

    @property
    def changed(self) -> bool:
        return self.record != self.before or bool(self.effects)

    @property
    def ended(self) -> bool:
        """True when this decision made a live verification terminal."""
        return self.before.is_live and not self.record.is_live


class Flow:
    """The model `transitions` drives for one decision.

    Callbacks' changes to the record are gathered and applied in one `evolve` when the record is
    next read: a decision makes several small updates, and copying a 30-field record for each
    was a measurable part of every request."""

    __slots__ = ("_changes", "_record", "effects", "event", "policy", "reply", "state", "steps", "touched")

    def __init__(self, state: str, record: Verification, event: Event, policy: Policy) -> None:
        self.state = state
        self._record = record
        self._changes: dict[str, Any] = {}
        self.touched: set[str] = set()
        self.event = event
        self.policy = policy
        self.effects: list[Effect] = []
        self.reply = Reply()
        self.steps: list[Step] = []

    @property
    def record(self) -> Verification:
        if self._changes:
            self._record = self._record.evolve(**self._changes)
            self._changes = {}
        return self._record

    def update(self, **changes: Any) -> None:
        if "last_code" in changes and "last_variant" not in changes:
            changes["last_variant"] = None  # a new code names its row anew: only a refusal sets one
        self._changes.update(changes)
        self.touched.update(changes)

    def peek(self, name: str) -> Any:
        """A field's value as the record will have it, without applying the pending changes."""
        return self._changes[name] if name in self._changes else getattr(self._record, name)

    def differs(self, record: Verification) -> bool:
        """Whether the record as it will be differs from `record` (cheaper than building it)."""
        if self._record is not record and self._record != record:
            return True
        return any(getattr(record, name) != value for name, value in self._changes.items())


def model(ev: EventData) -> Flow:
    flow = ev.model
    assert isinstance(flow, Flow)  # noqa: S101 - the machine only ever drives a Flow
    return flow


def named(name: str, fn: Callback) -> Callback:
    """Give a generated callback a stable name: it appears in diagrams and the definition hash."""
    fn.__name__ = fn.__qualname__ = name
    return fn



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
        self.table = compile_machine(self.machine)

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
        return Decision(record, after, flow.reply, tuple(flow.effects), tuple(flow.steps), frozenset(flow.touched))

    def _fire(self, flow: Flow, trigger: str) -> None:
        """Fire `trigger`, and note it as a step of the audit trail when it changed something."""
        source, before, reply, n_effects = flow.state, flow.record, flow.reply, len(flow.effects)
        self._dispatch(flow, trigger)
        if flow.state == source and len(flow.effects) == n_effects and not flow.differs(before):
            return  # an answer that changes nothing is not an event
        code: str | None
        detail: str | None
        last = (flow.peek("last_code"), flow.peek("last_detail_code"))
        if flow.reply is not reply and flow.reply.code is not None:
            code, detail = flow.reply.code, flow.reply.detail_code
        elif last != (before.last_code, before.last_detail_code):
            code, detail = last
        else:
            code = detail = None
        flow.steps.append(Step(flow.event.now_ms, trigger, source, flow.state, code, detail))


    def _dispatch(self, flow: Flow, trigger: str) -> None:
        """Through the table compiled from the library's own transitions (machines.compiled)."""
        candidates = self.table.get((flow.state, trigger))
        if candidates is None:
            msg = f"{self.channel}: no transition for {trigger!r} from {flow.state!r}"
            raise UndefinedTransitionError(msg)
        fire(candidates, flow)


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
