"""The machine's decision alone: the compiled table against the `transitions` library, in one run.

    python -m bench.decide

Both decide the same wrong-code confirm of an SMS verification; the library's path is the same
`ChannelMachine.decide` with its triggers dispatched through `Machine.events[...].trigger`, as before
the table existed. Prints microseconds per decision and their ratio (best of 5 rounds each).
"""

from __future__ import annotations

import timeit
from unittest import mock

from machines.channels import SMS
from machines.core import NEW, ChannelMachine, Flow
from machines.events import Confirm, IssuedCode, Start
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status

POLICY = Policy(session_ttl_s=600, result_ttl_s=600, max_verify_attempts=3, max_resends=3)
T0 = 1_000_000
ROUNDS, NUMBER = 5, 20_000


def library_dispatch(self: ChannelMachine, flow: Flow, trigger: str) -> None:
    self.machine.events[trigger].trigger(flow)


def per_decision_us(record: Verification, event: Confirm) -> float:
    best = min(timeit.repeat(lambda: SMS.decide(record, event, POLICY), number=NUMBER, repeat=ROUNDS))
    return best / NUMBER * 1e6


def main() -> None:
    fresh = Verification(id="v1", client_id="c1", channel=Channel.SMS, state=NEW, status=Status.PENDING,
                         version=0, definition="", created_at=T0, subject="sealed")
    started = SMS.decide(fresh, Start(T0, issued_code=IssuedCode("right", "sealed")), POLICY).record
    wrong = Confirm(T0 + 1, code_hash="wrong")
    compiled = per_decision_us(started, wrong)
    with mock.patch.object(ChannelMachine, "_dispatch", library_dispatch):
        library = per_decision_us(started, wrong)
    print(f"wrong-code decision: compiled {compiled:.1f} us, library {library:.1f} us, "
          f"ratio {library / compiled:.2f}x")


if __name__ == "__main__":
    main()
