"""The PASS machine, channel fallback and the age rule as tables, with no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from machines import fallback
from machines.age import birth_date, is_younger_than
from machines.channels import MACHINES, PASS, SMS
from machines.core import NEW, UndefinedTransitionError
from machines.effects import ArmTimer, DisarmTimer, Notify, SendPush, SendSms
from machines.events import (
    Cancel,
    Confirm,
    Event,
    IssuedCode,
    ProviderReport,
    Redeem,
    Refusal,
    Resend,
    Start,
    SwitchChannel,
    Tick,
    TimerFired,
)
from machines.pass_push import PUSH_FAILED, PUSH_RESULT, PUSH_SENT
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status, TimerKind
from tests import machine_table

FALLBACK = (("sms", frozenset({"6707", "6751"})),)
POLICY = Policy(session_ttl_s=420, result_ttl_s=600, push_timeout_s=180, fallback=FALLBACK)
SMS_POLICY = Policy(session_ttl_s=600, result_ttl_s=600, max_verify_attempts=3, max_resends=3)
T0 = machine_table.T0
PUSH_END = T0 + 180_000
SESSION_END = T0 + 420_000


def policy_of(channel: Channel) -> Policy:
    return {Channel.PASS: POLICY, Channel.SMS: SMS_POLICY}[channel]


def fresh() -> Verification:
    return machine_table.fresh(Channel.PASS, tx_id="tx-1")


def answer(code: str, detail: str | None = None, generation: int = 1, at: int = T0 + 10) -> ProviderReport:
    return ProviderReport(at, PUSH_RESULT, code, detail, generation)


step = machine_table.stepper(PASS, POLICY)


def push_sent() -> Verification:
    return step(fresh(), Start(T0)).record


def push_failed() -> Verification:
    return step(fresh(), Start(T0, refusal=Refusal("6752"))).record


def verified() -> Verification:
    return step(push_sent(), answer("2000")).record


def completed() -> Verification:
    return machine_table.redeemed(step, verified(), T0 + 20)


def denied() -> Verification:
    return step(push_sent(), answer("6705", "6205")).record


def unavailable() -> Verification:
    return step(push_sent(), answer("6707", "6036")).record


def timed_out() -> Verification:
    return step(push_sent(), TimerFired(PUSH_END)).record


def canceled() -> Verification:
    return machine_table.canceled(step, push_sent())


class TestStart:
    def test_start_sends_a_push_with_its_own_deadline(self):
        """push_sent, push 1, the push timer at push_timeout_s and the session timer."""
        decision = step(fresh(), Start(T0))
        record = decision.record
        assert (record.state, record.status, record.push_generation) == (PUSH_SENT, Status.PENDING, 1)
        assert (record.push_expires_at, record.expires_at) == (PUSH_END, SESSION_END)
        assert (record.attempts_left, record.resends_left) == (None, None)
        assert set(decision.effects) == {SendPush(1), ArmTimer(TimerKind.PUSH, PUSH_END),
                                         ArmTimer(TimerKind.SESSION, SESSION_END)}

    @pytest.mark.parametrize(("code", "detail", "offers_sms"), [
        ("6701", "6030", False), ("6701", "6210", False), ("6701", "6116", False),
        ("6704", "6113", False), ("6704", "6209", False), ("6704", "6041", False), ("6704", "6060", False),
        ("6707", "6036", True), ("6707", "6063", True), ("6707", "6211", True), ("6707", "6117", True),
        ("6751", None, True), ("6753", None, False), ("6754", None, False), ("6755", None, False),
        ("6756", None, False), ("6757", None, False),
    ])
    def test_refusals_at_start_end_it_with_their_detail_and_offer_sms_when_configured(
            self, code, detail, offers_sms):
        """The upstream refuses: failed with code and detail; 6707/6751 list the SMS fallback and keep
        the sealed subject for it, the others forget it at once."""
        decision = step(fresh(), Start(T0, refusal=Refusal(code, detail)))
        record = decision.record
        assert (record.status, record.last_code, record.last_detail_code) == (Status.FAILED, code, detail)
        assert (decision.reply.code, decision.reply.detail_code) == (code, detail)
        assert not any(isinstance(e, SendPush) for e in decision.effects)
        if offers_sms:
            assert (record.fallback, record.subject, record.expires_at) == ("sms", "sealed-subject", SESSION_END)
            assert ArmTimer(TimerKind.FALLBACK, SESSION_END) in decision.effects
        else:
            assert (record.fallback, record.subject) == (None, None)

    def test_a_push_that_could_not_be_sent_is_recoverable_by_resend(self):
        """6752 at start: pending (push_failed) answering 6752; resend sends push 1."""
        decision = step(fresh(), Start(T0, refusal=Refusal("6752")))
        record = decision.record
        assert (record.state, record.status, record.last_code, decision.reply.code) == (
            PUSH_FAILED, Status.PENDING, "6752", "6752")
        assert record.subject == "sealed-subject"
        assert PASS.decide(record, Confirm(T0 + 1), POLICY).reply.code == "6752"
        again = step(record, Resend(T0 + 2))
        assert (again.record.state, again.record.push_generation, again.record.last_code) == (PUSH_SENT, 1, None)
        assert SendPush(1) in again.effects


class TestAnswers:
    def test_confirm_and_resend_while_waiting_are_6702(self):
        """The user has not answered yet: 6702, nothing changes."""
        for event in (Confirm(T0 + 5), Resend(T0 + 5)):
            decision = PASS.decide(push_sent(), event, POLICY)
            assert decision.reply.code == "6702"
            assert not decision.changed

    def test_approval_verifies_at_once(self):
        """Approval: verified, the push and session timers stopped, result timer armed."""
        decision = step(push_sent(), answer("2000"))
        assert (decision.record.status, decision.record.last_code) == (Status.VERIFIED, "2000")
        assert decision.record.push_expires_at is None
        assert decision.effects == (DisarmTimer(TimerKind.PUSH, PUSH_END),
                                    DisarmTimer(TimerKind.SESSION, SESSION_END),
                                    ArmTimer(TimerKind.RESULT, T0 + 10 + 600_000), Notify())
        assert PASS.decide(decision.record, Confirm(T0 + 11), POLICY).reply.ok

    def test_denial_is_6705_6205_with_no_fallback(self):
        """The user cancels in the app: failed 6705/6205; its message does not point to SMS."""
        record = denied()
        assert (record.status, record.last_code, record.last_detail_code) == (Status.FAILED, "6705", "6205")
        assert (record.fallback, record.subject) == (None, None)

    @pytest.mark.parametrize(("code", "detail"), [("6703", "6212"), ("6706", "6203"), ("6705", "6033")])
    def test_other_reported_outcomes_end_it_with_their_detail(self, code, detail):
        """Outcomes the app reports with detail codes end it with both."""
        decision = step(push_sent(), answer(code, detail))
        assert (decision.record.last_code, decision.record.last_detail_code) == (code, detail)
        assert decision.record.status is Status.FAILED

    def test_a_reported_push_failure_is_recoverable(self):
        """6752 after the push: pending again; resend sends push 2 with a fresh deadline."""
        record = step(push_sent(), answer("6752", at=T0 + 30)).record
        assert (record.state, record.status, record.last_code) == (PUSH_FAILED, Status.PENDING, "6752")
        decision = step(record, Resend(T0 + 40))
        assert decision.record.push_generation == 2
        assert set(decision.effects) == {SendPush(2), ArmTimer(TimerKind.PUSH, T0 + 40 + 180_000)}

    def test_the_push_deadline_ends_it_6706(self):
        """No answer within push_timeout_s: failed 6706 by the timer, or by any read."""
        for event in (TimerFired(PUSH_END), Tick(PUSH_END), Confirm(PUSH_END)):
            decision = step(push_sent(), event)
            assert (decision.record.status, decision.record.last_code) == (Status.FAILED, "6706")

    def test_an_early_or_stale_push_timer_changes_nothing(self):
        """A push timer before its deadline, or after the push was answered, is a no-op."""
        assert not PASS.decide(push_sent(), TimerFired(PUSH_END - 1), POLICY).changed
        assert not PASS.decide(verified(), TimerFired(PUSH_END), POLICY).changed

    @pytest.mark.parametrize("report", [
        answer("2000", generation=2), ProviderReport(T0 + 10, "ars.call_result", "2000", None, 1),
        answer("6702", "6061"), answer("1234"),
    ], ids=["other-push", "wrong-type", "in-progress", "unknown-code"])
    def test_reports_that_decide_nothing_change_nothing(self, report):
        """Only a decisive answer about the current push counts."""
        assert not PASS.decide(push_sent(), report, POLICY).changed

    @pytest.mark.parametrize("make", [verified, denied, timed_out, canceled])
    def test_out_of_order_answers_change_nothing(self, make):
        """A denial after approval, an approval after the timeout...: the first decision stands."""
        record = make()
        for report in (answer("2000", at=T0 + 50), answer("6705", "6205", at=T0 + 50)):
            assert not PASS.decide(record, report, POLICY).changed


class TestFallback:
    def test_the_window_closes_at_the_session_deadline(self):
        """Until the session deadline the offer stands; then the subject is deleted and the offer gone."""
        record = unavailable()
        assert (record.fallback, record.subject) == ("sms", "sealed-subject")
        assert not PASS.decide(record, Tick(SESSION_END - 1), POLICY).changed
        for event in (TimerFired(SESSION_END), Tick(SESSION_END)):
            after = step(record, event).record
            assert (after.status, after.last_code, after.fallback, after.subject) == (
                Status.FAILED, "6707", None, None)

    def test_switching_to_sms_sends_a_code_on_the_same_verification(self):
        """fallback -> the same id becomes an SMS flow: code_sent, an SMS, the SMS session."""
        record = unavailable()
        start = Start(T0 + 60, issued_code=IssuedCode("hash-1", "sealed-1"))
        decision = fallback.decide(MACHINES, record, SwitchChannel(T0 + 60, "sms", start), policy_of)
        after = decision.record
        assert decision.reply.ok
        assert (after.id, after.channel, after.state, after.status) == ("v1", Channel.SMS, "code_sent",
                                                                        Status.PENDING)
        assert (after.fallback, after.last_code, after.ended_at, after.subject) == (
            None, None, None, "sealed-subject")
        assert (after.attempts_left, after.resends_left, after.expires_at) == (3, 3, T0 + 60 + 600_000)
        assert set(decision.effects) == {DisarmTimer(TimerKind.FALLBACK, SESSION_END), SendSms(1, "sealed-1"),
                                         ArmTimer(TimerKind.SESSION, T0 + 60 + 600_000)}
        confirmed = SMS.decide(after, Confirm(T0 + 70, code_hash="hash-1"), SMS_POLICY)
        assert confirmed.record.status is Status.VERIFIED

    def test_a_carrier_refusal_of_the_sms_ends_the_fallback_flow(self):
        """The SMS start's own carrier check still applies: failed 2910, subject gone."""
        decision = fallback.decide(MACHINES, unavailable(),
                                   SwitchChannel(T0 + 60, "sms", Start(T0 + 60, refusal=Refusal("2910"))),
                                   policy_of)
        assert (decision.record.channel, decision.record.status, decision.record.last_code) == (
            Channel.SMS, Status.FAILED, "2910")
        assert decision.record.subject is None

    @pytest.mark.parametrize("make", [push_sent, push_failed, verified, completed, denied, timed_out, canceled])
    def test_fallback_not_offered_is_409_3005(self, make):
        """A verification that does not list sms in fallback refuses the switch, changing nothing."""
        start = Start(T0 + 60, issued_code=IssuedCode("h", "s"))
        decision = fallback.decide(MACHINES, make(), SwitchChannel(T0 + 60, "sms", start), policy_of)
        assert (decision.reply.code, decision.reply.http_status) == ("3005", 409)
        assert not decision.changed

    def test_fallback_after_the_window_or_to_another_channel_is_409(self):
        """After the deadline the offer is withdrawn first; a channel not offered is refused."""
        record = unavailable()
        late = fallback.decide(MACHINES, record, SwitchChannel(SESSION_END, "sms", Start(SESSION_END)), policy_of)
        assert late.reply.code == "3005"
        assert (late.record.subject, late.record.fallback) == (None, None)
        other = fallback.decide(MACHINES, record, SwitchChannel(T0 + 60, "ars", Start(T0 + 60)), policy_of)
        assert other.reply.code == "3005"

    def test_an_sms_verification_has_no_fallback(self):
        """A channel whose machine has no fallback edges answers 409 3005."""
        sms_record = dataclasses.replace(fresh(), channel=Channel.SMS)
        decision = fallback.decide(MACHINES, sms_record, SwitchChannel(T0, "pass", Start(T0)), policy_of)
        assert decision.reply.code == "3005"


def kst_ms(year: int, month: int, day: int) -> int:
    """Midday in Korea on that date."""
    return int(datetime(year, month, day, 3, tzinfo=UTC).timestamp() * 1000)


class TestAge:
    @pytest.mark.parametrize(("birth", "gender", "today", "younger"), [
        ("20120601", "3", (2026, 5, 31), True),   # 13 until the day before the 14th birthday
        ("20120601", "4", (2026, 6, 1), False),   # 14 on the birthday
        ("120601", "3", (2026, 5, 31), True),     # YYMMDD: the century from the 7th digit
        ("120601", "1", (2026, 5, 31), False),    # 1912
        ("19900101", "1", (2026, 1, 1), False),
        ("20200229", "8", (2026, 3, 1), True),    # a foreign resident born in 2020
        ("20121399", "3", (2026, 1, 1), False),   # not a date: not judged here (validation refuses it)
    ])
    def test_younger_than_14(self, birth, gender, today, younger):
        """Full years on the Korean date; the gender digit names the century of a YYMMDD birth."""
        assert is_younger_than(14, birth, gender, kst_ms(*today)) is younger

    def test_the_korean_date_counts(self):
        """At 23:30 UTC on the eve of the birthday it is already the birthday in Korea."""
        eve = int(datetime(2026, 5, 31, 23, 30, tzinfo=UTC).timestamp() * 1000)
        assert not is_younger_than(14, "20120601", "3", eve)
        assert birth_date("000101", "9") is not None
        assert birth_date("000101", "9").year == 1800  # type: ignore[union-attr]


ALL_EVENTS: list[Event] = [
    Start(T0), Start(T0, refusal=Refusal("6707", "6036")), Start(T0, refusal=Refusal("6752")), Confirm(T0 + 1),
    Resend(T0 + 1), Cancel(T0 + 1), Redeem(T0 + 1, token_ok=True), answer("2000"), answer("6705", "6205"),
    answer("6752"), TimerFired(PUSH_END), TimerFired(SESSION_END),
    TimerFired(T0 + 10**9), Tick(T0 + 1), SwitchChannel(T0 + 1, "sms"),
]


@pytest.mark.parametrize("make", [fresh, push_sent, push_failed, verified, completed, denied, unavailable,
                                  timed_out, canceled])
@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_every_state_answers_every_event(make, event):
    """No (state, event) pair is undefined; finished records stay finished; a terminal record keeps
    its subject only while it offers a fallback."""
    record = make()
    try:
        decision = PASS.decide(record, event, POLICY)
    except UndefinedTransitionError as exc:  # pragma: no cover - the failure message
        pytest.fail(str(exc))
    if not record.is_live and record.state != NEW:
        assert decision.record.status is record.status
    if decision.record.status.is_terminal:
        assert (decision.record.subject is None) is (decision.record.fallback is None)
