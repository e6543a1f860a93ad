"""The SMS machine as a table: (state, event) -> (state, code, effects), with no I/O."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machines.channels import SMS
from machines.core import NEW, Flow, UndefinedTransitionError, deadline_passed
from machines.effects import ArmTimer, DisarmTimer, Notify, SendSms
from machines.events import (
    Cancel,
    Confirm,
    IssuedCode,
    Redeem,
    Refusal,
    Resend,
    Start,
    Tick,
    TimerFired,
)
from machines.record import Policy, Verification
from machines.sms import CODE_SENT
from machines.vocabulary import Channel, Status, TimerKind
from tests import machine_table

POLICY = Policy(session_ttl_s=600, result_ttl_s=600, max_verify_attempts=3, max_resends=3)
T0 = machine_table.T0
RIGHT = "hash-of-right-code"


def fresh() -> Verification:
    return machine_table.fresh(Channel.SMS)


def issued(n: int = 1) -> IssuedCode:
    return IssuedCode(code_hash=f"hash-{n}", sealed_code=f"sealed-{n}")


step = machine_table.stepper(SMS, POLICY)


def started(code_hash: str = RIGHT) -> Verification:
    return step(fresh(), Start(T0, issued_code=IssuedCode(code_hash, "sealed"))).record


def verified() -> Verification:
    return step(started(), Confirm(T0 + 1, code_hash=RIGHT)).record


def failed() -> Verification:
    record = started()
    for _ in range(3):
        record = step(record, Confirm(T0 + 1, code_hash="wrong")).record
    return record


def completed() -> Verification:
    return machine_table.redeemed(step, verified(), T0 + 2)


def expired() -> Verification:
    return step(started(), TimerFired(T0 + 600_000)).record


def canceled() -> Verification:
    return machine_table.canceled(step, started())


class TestStart:
    def test_start_sends_the_first_code_and_arms_the_session(self):
        """Start: code_sent, caps from the policy, one SMS (generation 1) and the session timer."""
        decision = step(fresh(), Start(T0, issued_code=issued()))
        record = decision.record
        assert (record.state, record.status) == (CODE_SENT, Status.PENDING)
        assert (record.attempts_left, record.resends_left, record.code_generation) == (3, 3, 1)
        assert record.code_hash == "hash-1"
        assert record.expires_at == T0 + 600_000
        assert decision.reply.ok
        assert set(decision.effects) == {SendSms(1, "sealed-1"), ArmTimer(TimerKind.SESSION, T0 + 600_000)}

    @pytest.mark.parametrize(("code", "detail"), [("2910", None), ("4016", None)])
    def test_carrier_refusal_at_start_fails_with_its_code(self, code, detail):
        """A subscriber check refusal ends the verification at once: failed, the carrier's code."""
        decision = step(fresh(), Start(T0, refusal=Refusal(code, detail)))
        assert decision.record.status is Status.FAILED
        assert decision.record.last_code == code
        assert decision.reply.code == code
        assert decision.record.subject is None, "personal data is dropped when it ends"
        assert Notify() in decision.effects
        assert not any(isinstance(e, SendSms) for e in decision.effects)


class TestConfirm:
    def test_right_code_verifies_and_arms_the_result_timer(self):
        """The matching code: verified, session timer swapped for the result timer, client told."""
        record = started()
        decision = step(record, Confirm(T0 + 5, code_hash=RIGHT))
        after = decision.record
        assert (after.state, after.status, after.last_code) == ("verified", Status.VERIFIED, "2000")
        assert after.verified_at == T0 + 5
        assert after.result_expires_at == T0 + 5 + 600_000
        assert after.code_hash is None, "a used code cannot be used again"
        assert decision.effects == (
            DisarmTimer(TimerKind.SESSION, record.expires_at),
            ArmTimer(TimerKind.RESULT, T0 + 5 + 600_000),
            Notify(),
        )

    def test_wrong_codes_count_down_then_end_with_4301(self):
        """Contract 7: 1st and 2nd wrong code 4013 (2 then 1 left), the 3rd ends it: 4301 failed."""
        record = started()
        seen = []
        for _ in range(3):
            decision = step(record, Confirm(T0 + 1, code_hash="wrong"))
            record = decision.record
            seen.append((decision.reply.code, record.attempts_left, record.status))
        assert seen == [("4013", 2, Status.PENDING), ("4013", 1, Status.PENDING),
                        ("4301", 0, Status.FAILED)]
        assert record.last_code == "4301"

    @pytest.mark.parametrize("code", ["4022", "4023"])
    def test_addon_check_holds_a_right_code_without_spending_an_attempt(self, code):
        """4022/4023 are recoverable: still pending, no attempt spent, the code still valid."""
        record = started()
        decision = step(record, Confirm(T0 + 1, code_hash=RIGHT, refusal=Refusal(code)))
        assert decision.reply.code == code
        assert decision.record.status is Status.PENDING
        assert decision.record.attempts_left == 3
        assert step(decision.record, Confirm(T0 + 2, code_hash=RIGHT)).record.status is Status.VERIFIED

    def test_a_code_after_the_deadline_is_404_4018_and_expires_the_verification(self):
        """Deadlines are checked on every input, not only by the timer."""
        decision = step(started(), Confirm(T0 + 600_000, code_hash=RIGHT))
        assert decision.record.status is Status.EXPIRED
        assert (decision.reply.code, decision.reply.http_status) == ("4018", 404)


class TestResend:
    def test_three_resends_succeed_and_the_fourth_ends_with_4302(self):
        """Contract 7: three resends, each a new code generation; the 4th request fails 4302."""
        record = started()
        for n in range(2, 5):
            decision = step(record, Resend(T0 + n, issued_code=issued(n)))
            record = decision.record
            assert decision.reply.ok
            assert SendSms(n, f"sealed-{n}") in decision.effects
            assert (record.code_generation, record.code_hash) == (n, f"hash-{n}")
        decision = step(record, Resend(T0 + 9, issued_code=issued(9)))
        assert (decision.reply.code, decision.record.status) == ("4302", Status.FAILED)

    def test_a_resend_replaces_the_code(self):
        """Only the newest code is accepted."""
        record = step(started(), Resend(T0 + 1, issued_code=issued(2))).record
        assert step(record, Confirm(T0 + 2, code_hash=RIGHT)).reply.code == "4013"
        assert step(record, Confirm(T0 + 2, code_hash="hash-2")).record.status is Status.VERIFIED


class TestFinished:
    """Contract section 7: the answers to a verification that is no longer pending."""

    @pytest.mark.parametrize(("make", "confirm", "resend"), [
        (verified, ("4018", 409), ("4150", 409)),
        (completed, ("4150", 409), ("4150", 409)),
        (failed, ("4301", None), ("4301", None)),
        (expired, ("4018", 404), ("4003", 404)),
        (canceled, ("4018", 404), ("4003", 404)),
    ])
    def test_confirm_and_resend_answers(self, make, confirm, resend):
        """Each finished status answers confirm and resend as the table says, changing nothing."""
        record = make()
        for event, expected in ((Confirm(T0 + 3, code_hash=RIGHT), confirm),
                                (Resend(T0 + 3, issued_code=issued(7)), resend)):
            decision = step(record, event)
            assert (decision.reply.code, decision.reply.http_status) == expected
            assert not SMS.decide(record, event, POLICY).changed

    def test_redeem_once(self):
        """A key token is redeemed once: completed, subject gone; a second redeem is 4000."""
        decision = step(verified(), Redeem(T0 + 2, token_ok=True))
        assert decision.reply.ok
        assert decision.record.status is Status.COMPLETED
        assert decision.record.subject is None
        assert step(decision.record, Redeem(T0 + 3, token_ok=True)).reply.code == "4000"

    def test_a_bad_token_is_4000_and_changes_nothing(self):
        """A token that does not match its record is refused without spending the real one."""
        record = verified()
        decision = SMS.decide(record, Redeem(T0 + 2, token_ok=False), POLICY)
        assert decision.reply.code == "4000"
        assert not decision.changed

    def test_an_unredeemed_token_expires(self):
        """After result_ttl_s a verified verification is expired and its token refused."""
        record = verified()
        decision = step(record, TimerFired(record.result_expires_at or 0))
        assert decision.record.status is Status.EXPIRED
        assert step(decision.record, Redeem(T0, token_ok=True)).reply.code == "4000"

    @pytest.mark.parametrize("make", [completed, failed, expired, canceled])
    def test_cancel_of_a_finished_verification_is_409(self, make):
        """Cancel is 409 once terminal."""
        decision = SMS.decide(make(), Cancel(T0 + 3), POLICY)
        assert decision.reply.http_status == 409
        assert not decision.changed

    def test_cancel_of_a_live_one_ends_it(self):
        """Cancel ends a pending verification: canceled, timers disarmed, client told."""
        record = started()
        decision = step(record, Cancel(T0 + 1))
        assert decision.record.status is Status.CANCELED
        assert DisarmTimer(TimerKind.SESSION, record.expires_at) in decision.effects
        assert Notify() in decision.effects


class TestTimers:
    def test_an_early_or_stale_timer_changes_nothing(self):
        """A timer that fires before the record's deadline (a stale one) is a no-op."""
        decision = SMS.decide(started(), TimerFired(T0 + 1), POLICY)
        assert not decision.changed

    def test_a_read_after_the_deadline_expires(self):
        """Tick (a read) applies a passed deadline."""
        assert step(started(), Tick(T0 + 600_000)).record.status is Status.EXPIRED


ALL_EVENTS = [
    Start(T0, issued_code=issued()), Confirm(T0 + 1, code_hash=RIGHT), Confirm(T0 + 1, code_hash="x"),
    Resend(T0 + 1, issued_code=issued(2)), Cancel(T0 + 1), Redeem(T0 + 1, token_ok=True),
    Redeem(T0 + 1, token_ok=False), TimerFired(T0 + 1),
    TimerFired(T0 + 10**9), Tick(T0 + 1),
]


class TestExhaustive:
    @pytest.mark.parametrize("make", [fresh, started, verified, completed, failed, expired, canceled])
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
    def test_every_state_answers_every_event(self, make, event):
        """No (state, event) pair is undefined, and finished records never come back to life."""
        record = make()
        try:
            decision = SMS.decide(record, event, POLICY)
        except UndefinedTransitionError as exc:  # pragma: no cover - the failure message
            pytest.fail(str(exc))
        if not record.is_live and record.state != NEW:
            assert decision.record.status is record.status

    def test_a_state_from_another_definition_is_refused(self):
        """A record whose state this definition does not know is an error, never misread."""
        record = dataclasses.replace(started(), state="awaiting_call", definition="0123456789ab")
        with pytest.raises(UndefinedTransitionError, match="0123456789ab"):
            SMS.decide(record, Tick(T0), POLICY)

    def test_records_carry_the_definition_that_wrote_them(self):
        """Every decision stamps the definition hash on the record it returns."""
        assert started().definition == SMS.version
        assert len(SMS.version) == 12

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(ALL_EVENTS[1:]), max_size=12))
    def test_caps_hold_for_any_sequence(self, events):
        """Whatever happens, counters never go below zero nor above the caps."""
        record = started()
        for event in events:
            record = step(record, event).record
            assert 0 <= (record.attempts_left or 0) <= 3
            assert 0 <= (record.resends_left or 0) <= 3
            assert record.code_generation <= 4
            if record.status.is_terminal:
                assert record.subject is None
                assert record.code_hash is None


class TestDeadlineGate:
    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from([started, verified, completed, failed, expired, canceled]),
           st.integers(min_value=T0, max_value=T0 + 2_000_000))
    def test_expire_changes_nothing_while_no_deadline_passed(self, make, now):
        """The hot-path gate is exact: when no deadline has passed, `expire` is a no-op."""
        record = make()
        if deadline_passed(record, now):
            return
        flow = Flow(state=record.state, record=record, event=Tick(now), policy=POLICY)
        SMS._fire(flow, "expire")
        assert (flow.state, flow.record, flow.effects) == (record.state, record, [])
