"""The ARS machine as a table: (state, event) -> (state, code, effects), with no I/O."""

from __future__ import annotations

import pytest

from machines.ars import CALL_OUTCOMES, CALL_RESULT, CALLING, WRONG_DIGITS
from machines.channels import ARS
from machines.core import NEW, UndefinedTransitionError
from machines.effects import ArmTimer, DisarmTimer, Notify, PlaceCall
from machines.events import (
    CallAgain,
    Cancel,
    Confirm,
    Event,
    NewCall,
    ProviderReport,
    Redeem,
    Refusal,
    StartCall,
    SwitchChannel,
    Tick,
    TimerFired,
)
from machines.pass_push import PUSH_RESULT
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status, TimerKind
from tests import machine_table

POLICY = Policy(session_ttl_s=420, result_ttl_s=600, max_resends=2)  # max_calls 3
T0 = machine_table.T0
SESSION_END = T0 + 420_000


def fresh() -> Verification:
    return machine_table.fresh(Channel.ARS)


def call(n: int = 1) -> NewCall:
    return NewCall(display_code=f"{n:02d}", sealed_code=f"sealed-{n}")


def result(code: str, generation: int = 1, at: int = T0 + 10, detail: str | None = None) -> ProviderReport:
    return ProviderReport(at, CALL_RESULT, code, detail, generation)


step = machine_table.stepper(ARS, POLICY)


def calling() -> Verification:
    return step(fresh(), StartCall(T0, call=call(1))).record


def wrong_digits() -> Verification:
    return step(calling(), result("4602")).record


def verified() -> Verification:
    return step(calling(), result("2000")).record


def completed() -> Verification:
    return machine_table.redeemed(step, verified(), T0 + 20)


def failed() -> Verification:
    return step(calling(), result("4611")).record


def expired() -> Verification:
    return step(calling(), TimerFired(SESSION_END)).record


def canceled() -> Verification:
    return machine_table.canceled(step, calling())


class TestStart:
    def test_start_places_the_first_call_and_shows_its_digits(self):
        """calling, generation 1, the digits on the record, one PlaceCall (sealed) and the session timer."""
        decision = step(fresh(), StartCall(T0, call=call(1)))
        record = decision.record
        assert (record.state, record.status, record.call_generation) == (CALLING, Status.PENDING, 1)
        assert (record.display_code, record.resends_left, record.attempts_left) == ("01", 2, None)
        assert decision.reply.ok
        assert set(decision.effects) == {PlaceCall(1, "sealed-1"), ArmTimer(TimerKind.SESSION, SESSION_END)}

    @pytest.mark.parametrize("code", ["2910", "4016"])
    def test_carrier_refusal_at_start_fails_without_a_call(self, code):
        """The carrier's subscriber check refuses: failed with its code, no call, subject gone."""
        decision = step(fresh(), StartCall(T0, refusal=Refusal(code)))
        assert (decision.record.status, decision.record.last_code, decision.reply.code) == (
            Status.FAILED, code, code)
        assert decision.record.subject is None
        assert decision.record.fallback is None
        assert not any(isinstance(e, PlaceCall) for e in decision.effects)


class TestBeforeTheResult:
    def test_confirm_before_the_result_is_4500_and_changes_nothing(self):
        """Asking for the result while the call is in progress: 4500 (the catalog's 409)."""
        decision = ARS.decide(calling(), Confirm(T0 + 5), POLICY)
        assert (decision.reply.code, decision.reply.http_status) == ("4500", None)
        assert not decision.changed

    def test_a_new_call_while_one_rings_is_4501_and_changes_nothing(self):
        """Resend (a new call) during the call in progress: 4501."""
        decision = ARS.decide(calling(), CallAgain(T0 + 5, call(2)), POLICY)
        assert decision.reply.code == "4501"
        assert not decision.changed


class TestResults:
    def test_success_verifies_at_once(self):
        """The provider's success: verified, key token issued, result timer armed, client told."""
        record = calling()
        decision = step(record, result("2000"))
        assert (decision.record.state, decision.record.status, decision.record.last_code) == (
            "verified", Status.VERIFIED, "2000")
        assert decision.record.verified_at == T0 + 10
        assert decision.effects == (DisarmTimer(TimerKind.SESSION, SESSION_END),
                                    ArmTimer(TimerKind.RESULT, T0 + 10 + 600_000), Notify())

    def test_confirm_once_verified_is_a_read_and_resend_is_4502(self):
        """Contract 7: confirm of a verified ARS verification is 200; a new call is 409 4502."""
        record = verified()
        confirm = ARS.decide(record, Confirm(T0 + 11), POLICY)
        assert confirm.reply.ok
        assert not confirm.changed
        again = ARS.decide(record, CallAgain(T0 + 11, call(2)), POLICY)
        assert (again.reply.code, again.reply.http_status) == ("4502", 409)
        assert not again.changed

    def test_wrong_digits_stay_pending_and_a_new_call_has_new_digits(self):
        """4602 leaves it pending (last_code 4602, confirm answers 4602); resend places call 2."""
        record = wrong_digits()
        assert (record.state, record.status, record.last_code) == (WRONG_DIGITS, Status.PENDING, "4602")
        assert ARS.decide(record, Confirm(T0 + 11), POLICY).reply.code == "4602"
        decision = step(record, CallAgain(T0 + 12, call(2)))
        after = decision.record
        assert (after.state, after.call_generation, after.display_code, after.resends_left) == (
            CALLING, 2, "02", 1)
        assert after.last_code is None
        assert decision.effects == (PlaceCall(2, "sealed-2"),)

    def test_max_calls_counts_every_call_and_the_last_4602_ends_it_4301(self):
        """Three calls with wrong digits: 4602, 4602, then failed 4301 (no fourth call)."""
        record = calling()
        seen = []
        for generation in (1, 2, 3):
            decision = step(record, result("4602", generation))
            record = decision.record
            seen.append((decision.reply.code, record.status, record.resends_left))
            if record.status is Status.PENDING:
                record = step(record, CallAgain(T0 + 20, call(generation + 1))).record
        assert seen == [("4602", Status.PENDING, 2), ("4602", Status.PENDING, 1), ("4301", Status.FAILED, 0)]
        assert (record.last_code, record.call_generation, record.subject) == ("4301", 3, None)

    @pytest.mark.parametrize("code", sorted(CALL_OUTCOMES))
    def test_each_call_outcome_ends_it_with_its_code(self, code):
        """4604, 4610-4613, 4620, 4624, 4641, 4642, 4698, 4699: failed with that code."""
        decision = step(calling(), result(code))
        assert (decision.record.status, decision.record.last_code, decision.reply.code) == (
            Status.FAILED, code, code)
        assert decision.record.subject is None
        assert Notify() in decision.effects
        assert DisarmTimer(TimerKind.SESSION, SESSION_END) in decision.effects

    @pytest.mark.parametrize("report", [
        result("2000", generation=2),  # a call that was never placed
        ProviderReport(T0 + 10, PUSH_RESULT, "2000", None, 1),  # another channel's event type
        result("9876"),  # a code the call centre does not define
    ], ids=["future-generation", "wrong-type", "unknown-code"])
    def test_reports_that_do_not_name_the_call_in_progress_change_nothing(self, report):
        """Only the current call's own result counts."""
        decision = ARS.decide(calling(), report, POLICY)
        assert decision.reply.ok
        assert not decision.changed

    def test_a_late_report_of_an_old_call_cannot_act_on_the_new_one(self):
        """Call 1 failed 4602, call 2 rings: call 1's late success report is ignored."""
        record = step(wrong_digits(), CallAgain(T0 + 12, call(2))).record
        assert not ARS.decide(record, result("2000", generation=1, at=T0 + 13), POLICY).changed
        assert step(record, result("2000", generation=2, at=T0 + 14)).record.status is Status.VERIFIED


class TestDeadlinesAndFinished:
    def test_the_session_expires_by_timer_and_by_read(self):
        """7 minutes without a result: expired (4001), by the timer and by any read."""
        for event in (TimerFired(SESSION_END), Tick(SESSION_END)):
            decision = step(calling(), event)
            assert (decision.record.status, decision.record.last_code) == (Status.EXPIRED, "4001")

    def test_a_result_after_the_deadline_does_not_verify(self):
        """A success reported after the session ended finds it expired."""
        decision = step(calling(), result("2000", at=SESSION_END + 1))
        assert decision.record.status is Status.EXPIRED

    @pytest.mark.parametrize(("make", "confirm", "resend"), [
        (completed, ("4150", 409), ("4150", 409)),
        (failed, ("4611", None), ("4611", None)),
        (expired, ("4018", 404), ("4003", 404)),
        (canceled, ("4018", 404), ("4003", 404)),
    ])
    def test_answers_once_no_longer_pending(self, make, confirm, resend):
        """Contract section 7 for ARS."""
        record = make()
        for event, expected in ((Confirm(T0 + 30), confirm), (CallAgain(T0 + 30, call(5)), resend)):
            decision = ARS.decide(record, event, POLICY)
            assert (decision.reply.code, decision.reply.http_status) == expected
            assert not decision.changed

    @pytest.mark.parametrize("make", [calling, wrong_digits, verified, failed])
    def test_fallback_is_not_offered_by_ars(self, make):
        """With no ARS chain configured, fallback is 409 3005 whatever the state."""
        decision = ARS.decide(make(), SwitchChannel(T0 + 30, "sms"), POLICY)
        assert (decision.reply.code, decision.reply.http_status) == ("3005", 409)
        assert not decision.changed


ALL_EVENTS: list[Event] = [
    StartCall(T0, call=call(1)), StartCall(T0, refusal=Refusal("2910")), Confirm(T0 + 1),
    CallAgain(T0 + 1, call(9)), Cancel(T0 + 1), Redeem(T0 + 1, token_ok=True), result("2000"),
    result("4602"), result("4611"), result("2000", generation=7), TimerFired(SESSION_END),
    TimerFired(T0 + 10**9), Tick(T0 + 1), SwitchChannel(T0 + 1, "sms"),
]


@pytest.mark.parametrize("make", [fresh, calling, wrong_digits, verified, completed, failed, expired, canceled])
@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_every_state_answers_every_event(make, event):
    """No (state, event) pair is undefined; finished records never come back to life."""
    record = make()
    try:
        decision = ARS.decide(record, event, POLICY)
    except UndefinedTransitionError as exc:  # pragma: no cover - the failure message
        pytest.fail(str(exc))
    if not record.is_live and record.state != NEW:
        assert decision.record.status is record.status
    if decision.record.status.is_terminal:
        assert decision.record.subject is None
