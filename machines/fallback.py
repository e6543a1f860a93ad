"""Channel fallback: a failed verification that may continue on another channel.

Which failures offer which channel is configuration (`fallback:` in config/defaults.yaml, handed
to the machines as `Policy.fallback`), so another chain is a configuration change: a channel
whose machine ends through `end_offering_fallback` and includes `FALLBACK_TRANSITIONS` offers
whatever its configuration lists.

The contract says failed outcomes are terminal and that the subject is deleted when a
verification ends, yet a fallback must reach the same person. The least surprising reading
kept here: the verification IS failed (status, code and answers are those of any failed
verification), and it additionally lists `fallback` while a switch is possible. Only during
that window is the sealed subject kept; the window ends at the failed session's own deadline
(or one session length after a refusal at start), when a FALLBACK timer - or any read after
that moment - deletes the subject and withdraws the offer. No personal data outlives the
session it was given for.

`decide` runs a switch as two pure decisions committed as one: the failed channel's machine
hands the record over (state `new`, the new channel), then the new channel's machine starts it
exactly as a fresh start would (a code sent, or the carrier's refusal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import EventData

from machines.common import finish, refusal_of, reply
from machines.core import (
    FAILED,
    FINISHED_STATES,
    NEW,
    VERIFIED,
    ChannelMachine,
    Decision,
    Flow,
    Reply,
    model,
)
from machines.effects import ArmTimer, DisarmTimer
from machines.events import SwitchChannel, Tick
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Code, TimerKind

FALLBACK_TRIGGER = "fallback"


def offered_channels(policy: Policy, code: str) -> list[str]:
    return [channel for channel, codes in policy.fallback if code in codes]


def end_offering_fallback(flow: Flow, code: str, detail_code: str | None = None,
                          variant: str | None = None) -> None:
    """End the verification failed with `code`; keep the sealed subject while a fallback is open."""
    subject = flow.record.subject
    now = flow.event.now_ms
    deadline = flow.record.expires_at or now + flow.policy.session_ttl_s * 1000
    finish(flow, code, detail_code, variant)
    flow.reply = Reply(code, detail_code, variant=variant)
    offered = offered_channels(flow.policy, code)
    if offered and subject is not None and now < deadline:
        flow.update(subject=subject, fallback=",".join(offered), expires_at=deadline)
        flow.effects.append(ArmTimer(TimerKind.FALLBACK, deadline))


def fail_offering_fallback(code: str, detail_code: str | None = None) -> Callable[[EventData], None]:
    def fail(ev: EventData) -> None:
        end_offering_fallback(model(ev), code, detail_code)

    fail.__name__ = fail.__qualname__ = f"fail_{code}_offering_fallback"
    return fail


def fallback_window_over(ev: EventData) -> bool:
    record = model(ev).record
    return bool(record.fallback) and model(ev).event.now_ms >= record.expires_at


def close_fallback(ev: EventData) -> None:
    """The window passed: forget the subject and withdraw the offer."""
    model(ev).update(subject=None, fallback=None)


def offers_requested_channel(ev: EventData) -> bool:
    flow = model(ev)
    event = flow.event
    offered = (flow.record.fallback or "").split(",")
    return (isinstance(event, SwitchChannel) and event.start is not None and event.channel in offered
            and flow.record.subject is not None)


def hand_over(ev: EventData) -> None:
    """Reopen the record as a new verification of the requested channel (same id, same subject)."""
    flow = model(ev)
    event = flow.event
    assert isinstance(event, SwitchChannel)  # noqa: S101 - guarded by offers_requested_channel
    flow.effects.append(DisarmTimer(TimerKind.FALLBACK, flow.record.expires_at))
    flow.update(
        channel=Channel(event.channel), fallback=None, ended_at=None, last_code=None,
        last_detail_code=None, last_variant=None, expires_at=0, attempts_left=None, resends_left=None,
        push_expires_at=None,
    )


FALLBACK_TRANSITIONS: list[dict[str, Any]] = [
    # Listed before the shared transitions: a passed window is closed by every input.
    {"trigger": "expire", "source": FAILED, "dest": None, "conditions": [fallback_window_over],
     "after": [close_fallback]},
    {"trigger": FALLBACK_TRIGGER, "source": FAILED, "dest": NEW, "conditions": [offers_requested_channel],
     "after": [hand_over]},
]


def refuse_fallback_transitions(states: list[str]) -> list[dict[str, Any]]:
    """Every state of a channel that offers fallback answers a request it cannot honour: 409."""
    return [{"trigger": FALLBACK_TRIGGER, "source": [NEW, *states, VERIFIED, *FINISHED_STATES],
             "dest": None, "after": [reply(Code.FALLBACK_NOT_OFFERED, 409)]}]


def decide(
    machines: dict[Channel, ChannelMachine],
    record: Verification,
    event: SwitchChannel,
    policy_of: Callable[[Channel], Policy],
) -> Decision:
    """Switch channel: hand over with the failed channel's machine, then start with the new one's."""
    machine = machines[record.channel]
    if FALLBACK_TRIGGER not in machine.machine.events:
        tick = machine.decide(record, Tick(event.now_ms), policy_of(record.channel))
        return Decision(tick.before, tick.record, Reply(Code.FALLBACK_NOT_OFFERED, http_status=409), tick.effects,
                        tick.steps)
    handed = machine.decide(record, event, policy_of(record.channel))
    if handed.record.channel == record.channel or handed.record.channel not in machines:
        return handed
    target = handed.record.channel
    assert event.start is not None  # noqa: S101 - offers_requested_channel checked it
    started = machines[target].decide(handed.record, event.start, policy_of(target))
    return Decision(record, started.record, started.reply, handed.effects + started.effects,
                    handed.steps + started.steps)


def fail_with_refusal(ev: EventData) -> None:
    """An upstream's refusal at start ends the verification, offering a fallback where one is
    configured for that code."""
    refusal = refusal_of(model(ev))
    end_offering_fallback(model(ev), refusal.code, refusal.detail_code, refusal.variant)
