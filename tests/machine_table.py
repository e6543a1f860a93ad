"""What the machine-table tests share: a fresh record of a channel, one decision as the shell
would commit it (the version bumped), and the endings every channel reaches the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from machines.core import NEW, ChannelMachine, Decision
from machines.events import Cancel, Event, Redeem
from machines.record import Policy, Verification, changed_fields
from machines.vocabulary import Channel, Status

T0 = 1_000_000

Step = Callable[[Verification, Event], Decision]


def fresh(channel: Channel, **fields: object) -> Verification:
    """A record the shell prepared for a start: nothing decided yet."""
    record = Verification(id="v1", client_id="c1", channel=channel, state=NEW, status=Status.PENDING,
                          version=0, definition="", created_at=T0, subject="sealed-subject")
    return dataclasses.replace(record, **fields)  # type: ignore[arg-type]


def stepper(machine: ChannelMachine, policy: Policy) -> Step:
    """Decide one event; the shell bumps the version on each commit, so records stay comparable."""

    def step(record: Verification, event: Event) -> Decision:
        decision = machine.decide(record, event, policy)
        written, deleted = changed_fields(record, decision.record)
        assert decision.touched is not None
        assert set(written) | set(deleted) <= decision.touched, "a change the commit would not write"
        assert changed_fields(record, decision.record, decision.touched) == (written, deleted)
        return dataclasses.replace(decision, record=dataclasses.replace(decision.record, version=record.version + 1))

    return step


def redeemed(step: Step, verified: Verification, at: int) -> Verification:
    return step(verified, Redeem(at, token_ok=True)).record


def canceled(step: Step, pending: Verification, at: int = T0 + 1) -> Verification:
    return step(pending, Cancel(at)).record
