"""The compiled dispatch table decides exactly as the `transitions` library does: for every
channel, every state, every trigger and every combination of its guards' answers, the same
transition fires (the same callbacks, in the same order, and the same state after)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from transitions import EventData, Machine, MachineError

from machines.channels import MACHINES
from machines.compiled import UnsupportedDefinitionError, compile_machine, fire
from machines.core import ChannelMachine


class Model:
    def __init__(self, state: str) -> None:
        self.state = state


class Instrumented:
    """The channel's definition with every guard answered by an oracle and every callback logged."""

    def __init__(self, channel_machine: ChannelMachine) -> None:
        self.answers: dict[str, bool] = {}
        self.log: list[str] = []
        self.stubs: dict[int, Callable[[EventData], Any]] = {}
        transitions = [self._instrument(t) for t in channel_machine.transitions]
        self.machine = Machine(model=None, states=list(channel_machine.statuses), transitions=transitions,
                               initial=None, auto_transitions=False, send_event=True)
        self.table = compile_machine(self.machine)

    def _stub(self, func: Callable[..., Any], *, guard: bool) -> Callable[[EventData], Any]:
        if id(func) not in self.stubs:
            name = func.__qualname__
            if guard:
                self.stubs[id(func)] = lambda _ev, name=name: self.answers[name]
            else:
                self.stubs[id(func)] = lambda _ev, name=name: self.log.append(name)
        return self.stubs[id(func)]

    def _instrument(self, transition: dict[str, Any]) -> dict[str, Any]:
        out = dict(transition)
        for key in ("conditions", "unless", "before", "after"):
            if key in out:
                funcs = out[key] if isinstance(out[key], list) else [out[key]]
                out[key] = [self._stub(f, guard=key in {"conditions", "unless"}) for f in funcs]
        return out

    def guard_names(self, state: str, trigger: str) -> list[str]:
        transitions = self.machine.events[trigger].transitions[state]
        return sorted({self._name_of(c.func) for t in transitions for c in t.conditions})

    def _name_of(self, stub: Any) -> str:
        return str(stub.__defaults__[0])

    def by_library(self, state: str, trigger: str) -> tuple[str, list[str], bool]:
        self.log = []
        model = Model(state)
        fired = bool(self.machine.events[trigger].trigger(model))
        return model.state, self.log, fired

    def by_table(self, state: str, trigger: str) -> tuple[str, list[str], bool]:
        self.log = []
        model = Model(state)
        fired = fire(self.table[(state, trigger)], model)
        return model.state, self.log, fired


@pytest.mark.parametrize("channel", sorted(MACHINES))
def test_the_table_decides_as_the_library_for_every_guard_outcome(channel):
    subject = Instrumented(MACHINES[channel])
    checked = 0
    for (state, trigger) in sorted(subject.table):
        names = subject.guard_names(state, trigger)
        for answers in itertools.product([False, True], repeat=len(names)):
            subject.answers = dict(zip(names, answers, strict=True))
            assert subject.by_table(state, trigger) == subject.by_library(state, trigger), (
                channel, state, trigger, subject.answers)
            checked += 1
    assert checked > 50  # every channel has that many (state, trigger, guard answers) cases


@pytest.mark.parametrize("channel", sorted(MACHINES))
def test_the_table_holds_exactly_the_pairs_the_library_answers(channel):
    """A (state, trigger) absent from the table is one the library refuses (MachineError)."""
    machine = MACHINES[channel].machine
    table = MACHINES[channel].table
    for state, trigger in itertools.product(machine.states, machine.events):
        if (state, trigger) in table:
            continue
        with pytest.raises(MachineError):
            machine.events[trigger].trigger(Model(state))


def test_a_definition_using_what_the_table_cannot_reproduce_is_refused():
    with_enter = Machine(model=None, states=[{"name": "a", "on_enter": [lambda _ev: None]}, "b"],
                         transitions=[{"trigger": "go", "source": "b", "dest": "a"}],
                         initial=None, auto_transitions=False, send_event=True)
    with pytest.raises(UnsupportedDefinitionError):
        compile_machine(with_enter)
    by_name = Machine(model=None, states=["a", "b"],
                      transitions=[{"trigger": "go", "source": "a", "dest": "b", "after": "on_model"}],
                      initial=None, auto_transitions=False, send_event=True)
    with pytest.raises(UnsupportedDefinitionError):
        compile_machine(by_name)
