"""A dispatch table compiled from a `transitions` machine, for the hot path.

The `transitions` library stays the single source of truth: the table is read, at import, from
the very `Transition` objects the library built from a channel's definition (their order, their
conditions and `unless` guards, their `before`/`after` callbacks and their destination), and
`tests/test_compiled.py` checks it against the library for every state, every trigger and every
outcome of the guards. What it leaves out is what the definitions never use: `prepare` callbacks,
state `on_enter`/`on_exit` callbacks and machine-wide callbacks (compiling refuses a machine
that has any), and the event object the library builds for each callback (ours only read its
`model`).

Firing a trigger is then one dict lookup and a loop over a short tuple, where the library
resolves names, builds an `EventData` and walks several layers of calls per trigger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from transitions import EventData, Machine

Guard = Callable[[EventData], Any]
Action = Callable[[EventData], Any]


class ModelEvent:
    """What a callback receives: ours read only `.model`, as they would from the library's EventData."""

    __slots__ = ("model",)

    def __init__(self, model: Any) -> None:
        self.model = model


@dataclass(frozen=True, slots=True)
class CompiledTransition:
    guards: tuple[tuple[Guard, bool], ...]  # (predicate, the answer it must give)
    before: tuple[Action, ...]
    after: tuple[Action, ...]
    dest: str | None  # None: internal, the state stays


Table = dict[tuple[str, str], tuple[CompiledTransition, ...]]


class UnsupportedDefinitionError(ValueError):
    """A machine uses a feature of the library the compiled table does not reproduce."""


def compile_machine(machine: Machine) -> Table:
    """The (state, trigger) -> transitions table of `machine`, in the library's order."""
    _refuse_unsupported(machine)
    table: Table = {}
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            table[(source, trigger)] = tuple(_compile(t) for t in transitions)
    return table


def fire(candidates: tuple[CompiledTransition, ...], model: Any) -> bool:
    """Run a trigger's `candidates` for the model's state (`table[(model.state, trigger)]`) as the
    library would: the first transition whose guards all pass runs its callbacks and sets
    `model.state`; True when one did."""
    event = cast("EventData", ModelEvent(model))
    for transition in candidates:
        if _guards_pass(transition, event):
            for action in transition.before:
                action(event)
            if transition.dest is not None:
                model.state = transition.dest
            for action in transition.after:
                action(event)
            return True
    return False


def _guards_pass(transition: CompiledTransition, event: EventData) -> bool:
    for guard, wanted in transition.guards:  # noqa: SIM110 - a loop, not all(genexpr): it runs for every event
        if bool(guard(event)) is not wanted:
            return False
    return True


def _compile(transition: Any) -> CompiledTransition:
    if transition.prepare:
        raise UnsupportedDefinitionError("prepare callbacks are not compiled")
    guards = tuple((_callable(c.func), bool(c.target)) for c in transition.conditions)
    return CompiledTransition(
        guards=guards,
        before=tuple(_callable(f) for f in transition.before),
        after=tuple(_callable(f) for f in transition.after),
        dest=transition.dest,
    )


def _callable(func: Any) -> Callable[[EventData], Any]:
    if not callable(func):  # a name the library would resolve on the model at run time
        raise UnsupportedDefinitionError(f"callback {func!r} is not a function")
    return cast("Callable[[EventData], Any]", func)


def _refuse_unsupported(machine: Machine) -> None:
    machine_wide = (machine.prepare_event, machine.before_state_change, machine.after_state_change,
                    machine.finalize_event, machine.on_exception)
    if any(machine_wide):
        raise UnsupportedDefinitionError("machine-wide callbacks are not compiled")
    for state in machine.states.values():
        if state.on_enter or state.on_exit:
            raise UnsupportedDefinitionError(f"state {state.name!r} has enter/exit callbacks")
