"""PASS: the service sends a push to the user's PASS app, the user approves or denies it there.

start -> push_sent -> verified. The upstream's subscriber check refuses at start (6701, 6704,
6707, 6751, 6753-6757, with their detail codes), and a subject younger than 14 is refused 6751
without asking it (see `age`). The app's answer arrives as a signed report: approval verifies at
once, denial ends it 6705 (detail 6205). No answer within push_timeout_s ends it 6706 (a timer,
and every read checks the deadline too). A push that could not be delivered (6752, at start or
reported later) is recoverable: the verification stays pending and resend sends a new push.
Confirm is a question: 6702 while the user has not answered, with the detail code of the app's
progress when the upstream reported one (6061, 6032, 6114: a 6702 report keeps the push waiting).
The push timer's 6706 carries the source's "verification timeout" detail, 6203.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData

from machines import fallback, reports
from machines.common import grant, open_session, refusal_of, refused, reply_last_code
from machines.core import FAILED, FINISHED_STATES, NEW, VERIFIED, Flow, Reply, model
from machines.effects import ArmTimer, DisarmTimer, SendPush
from machines.events import ProviderReport
from machines.record import Verification
from machines.vocabulary import Code, TimerKind

PUSH_SENT = "push_sent"
PUSH_FAILED = "push_failed"
PUSH_RESULT = "pass.push_result"  # the provider event type of a push's outcome
# Outcomes that end the verification with their own code (6702 is "not yet", 6752 recoverable).
PUSH_OUTCOMES = frozenset({"6701", "6703", "6704", "6705", "6706", "6707", "6751", "6753", "6754",
                           "6755", "6756", "6757"})
PUSH_TIMEOUT_DETAIL = "6203"  # PASS 인증실패(인증 TIMEOUT): no answer within push_timeout_s


def open_push_session(ev: EventData) -> None:
    open_session(ev)
    model(ev).update(attempts_left=None, resends_left=None)


def send_push(ev: EventData) -> None:
    flow = model(ev)
    generation = flow.record.push_generation + 1
    deadline = flow.event.now_ms + flow.policy.push_timeout_s * 1000
    flow.update(push_generation=generation, push_expires_at=deadline, last_code=None, last_detail_code=None)
    flow.effects += [SendPush(generation), ArmTimer(TimerKind.PUSH, deadline)]
    flow.reply = Reply()


def stop_push_timer(ev: EventData) -> None:
    flow = model(ev)
    if flow.record.push_expires_at:
        flow.effects.append(DisarmTimer(TimerKind.PUSH, flow.record.push_expires_at))
    flow.update(push_expires_at=None)


def push_over(ev: EventData) -> bool:
    deadline = model(ev).record.push_expires_at
    return deadline is not None and model(ev).event.now_ms >= deadline


def refused_push(ev: EventData) -> bool:
    return refused(ev) and refusal_of(model(ev)).code == Code.PUSH_FAILED


def note_push_failed(flow: Flow, detail_code: str | None = None) -> None:
    flow.update(last_code=Code.PUSH_FAILED, last_detail_code=detail_code)
    flow.reply = Reply(Code.PUSH_FAILED, detail_code)


def push_failed_at_start(ev: EventData) -> None:
    note_push_failed(model(ev), refusal_of(model(ev)).detail_code)


def push_generation(record: Verification) -> int:
    return record.push_generation


def report(ev: EventData) -> ProviderReport | None:
    return reports.current(ev, PUSH_RESULT, push_generation)


reported_approval = reports.reported(PUSH_RESULT, push_generation, Code.SUCCESS)
reported_push_failure = reports.reported(PUSH_RESULT, push_generation, Code.PUSH_FAILED)
reported_outcome = reports.reported(PUSH_RESULT, push_generation, *PUSH_OUTCOMES)
reported_progress = reports.reported(PUSH_RESULT, push_generation, Code.APP_NOT_FINISHED)


def note_progress(ev: EventData) -> None:
    """The app says the user is still at it (6702 and where: 6061, 6032, 6114): still waiting."""
    found = report(ev)
    model(ev).update(last_code=Code.APP_NOT_FINISHED, last_detail_code=found.detail_code if found else None)
    model(ev).reply = Reply()


def reply_not_finished(ev: EventData) -> None:
    """6702, with the detail code of the app's last progress report."""
    record = model(ev).record
    detail = record.last_detail_code if record.last_code == Code.APP_NOT_FINISHED else None
    model(ev).reply = Reply(Code.APP_NOT_FINISHED, detail)


def push_failed_later(ev: EventData) -> None:
    found = report(ev)
    note_push_failed(model(ev), found.detail_code if found else None)


def fail_with_report(ev: EventData) -> None:
    found = report(ev)
    assert found is not None  # noqa: S101 - guarded by reported_outcome
    fallback.end_offering_fallback(model(ev), found.code, found.detail_code)


PENDING_STATES = [PUSH_SENT, PUSH_FAILED]

TRANSITIONS: list[dict[str, Any]] = [
    *fallback.FALLBACK_TRANSITIONS,
    # The push deadline, checked before the shared session deadline.
    {"trigger": "expire", "source": PUSH_SENT, "dest": FAILED, "conditions": [push_over],
     "before": [stop_push_timer], "after": [fallback.fail_offering_fallback(Code.APP_TIMEOUT, PUSH_TIMEOUT_DETAIL)]},
    {"trigger": "start", "source": NEW, "dest": PUSH_FAILED, "conditions": [refused_push],
     "after": [open_push_session, push_failed_at_start]},
    {"trigger": "start", "source": NEW, "dest": FAILED, "conditions": [refused],
     "after": [fallback.fail_with_refusal]},
    {"trigger": "start", "source": NEW, "dest": PUSH_SENT, "after": [open_push_session, send_push]},
    {"trigger": "confirm", "source": PUSH_SENT, "dest": None, "after": [reply_not_finished]},
    {"trigger": "confirm", "source": PUSH_FAILED, "dest": None, "after": [reply_last_code]},
    {"trigger": "resend", "source": PUSH_SENT, "dest": None, "after": [reply_not_finished]},
    {"trigger": "resend", "source": PUSH_FAILED, "dest": PUSH_SENT, "after": [send_push]},
    {"trigger": "report", "source": PUSH_SENT, "dest": VERIFIED, "conditions": [reported_approval],
     "before": [stop_push_timer], "after": [grant]},
    {"trigger": "report", "source": PUSH_SENT, "dest": PUSH_FAILED, "conditions": [reported_push_failure],
     "before": [stop_push_timer], "after": [push_failed_later]},
    {"trigger": "report", "source": PUSH_SENT, "dest": FAILED, "conditions": [reported_outcome],
     "before": [stop_push_timer], "after": [fail_with_report]},
    {"trigger": "report", "source": PUSH_SENT, "dest": None, "conditions": [reported_progress],
     "after": [note_progress]},
    {"trigger": "report", "source": [NEW, *PENDING_STATES, VERIFIED, *FINISHED_STATES], "dest": None,
     "after": [reports.ignore]},
    *fallback.refuse_fallback_transitions(PENDING_STATES),
]
