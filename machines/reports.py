"""Provider reports (ARS call results, PASS push answers) as seen by a machine.

A report counts only when it is of the channel's event type and names the call or push now in
progress (its generation): a late report about an older one, or another channel's, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from transitions import EventData

from machines.core import Reply, model
from machines.events import ProviderReport
from machines.record import Verification


def current(ev: EventData, event_type: str, generation: Callable[[Verification], int]) -> ProviderReport | None:
    event = model(ev).event
    if not isinstance(event, ProviderReport) or event.event_type != event_type:
        return None
    return event if event.generation == generation(model(ev).record) else None


def reported(event_type: str, generation: Callable[[Verification], int],
             *codes: str) -> Callable[[EventData], bool]:
    """A condition: the current call's or push's report carries one of `codes`."""

    def check(ev: EventData) -> bool:
        found = current(ev, event_type, generation)
        return found is not None and found.code in codes

    check.__name__ = check.__qualname__ = f"reported_{event_type}_" + "_".join(sorted(codes))
    return check


def ignore(ev: EventData) -> None:
    """A report about another call or push, or one that finds the verification moved on: acknowledged."""
    model(ev).reply = Reply()
