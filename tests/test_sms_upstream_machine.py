"""The SMS machine when the upstream draws, sends and checks the code (PortOne), as tables:
(record, event) -> (state, status, reply code, attempts left, effects), with no I/O. The caps,
codes and states are those of the mode where veriflow draws the code."""

from __future__ import annotations

import dataclasses

import pytest

from machines.channels import SMS
from machines.core import NEW, Decision
from machines.effects import ArmTimer, DisarmTimer, Notify, SendSms
from machines.events import Confirm, Event, IssuedCode, Refusal, Resend, Start, TimerFired
from machines.record import Policy, Verification
from machines.sms import CODE_MISMATCH, CODE_SENT
from machines.vocabulary import Channel, Status, TimerKind

POLICY = Policy(session_ttl_s=600, result_ttl_s=600, max_verify_attempts=3, max_resends=3)
T0 = 1_000_000
UID = "imp_000000000001"


def fresh() -> Verification:
    return Verification(id="v1", client_id="c1", channel=Channel.SMS, state=NEW, status=Status.PENDING,
                        version=0, definition="", created_at=T0, subject="sealed-subject",
                        provider="portone")


def step(record: Verification, event: Event) -> Decision:
    decision = SMS.decide(record, event, POLICY)
    return dataclasses.replace(decision, record=dataclasses.replace(decision.record, version=record.version + 1))


def started(upstream_id: str = UID) -> Verification:
    return step(fresh(), Start(T0, upstream_id=upstream_id)).record


def verdict(refusal: Refusal | None = None, upstream_id: str = UID, at: int = T0 + 1) -> Confirm:
    return Confirm(at, refusal=refusal, checked_upstream_id=upstream_id)


class TestStart:
    def test_the_upstream_sent_the_code_so_no_sms_effect(self):
        """Start with the upstream's id: code_sent, the caps, the session timer, and no SendSms
        (the upstream sent the SMS itself); veriflow keeps no code hash."""
        decision = step(fresh(), Start(T0, upstream_id=UID))
        record = decision.record
        assert (record.state, record.status, record.upstream_id) == (CODE_SENT, Status.PENDING, UID)
        assert (record.attempts_left, record.resends_left, record.code_generation) == (3, 3, 1)
        assert record.code_hash is None
        assert decision.effects == (ArmTimer(TimerKind.SESSION, T0 + 600_000),)
        assert decision.reply.ok

    @pytest.mark.parametrize("code", ["2910", "9998", "4016"])
    def test_the_upstreams_refusal_at_start_fails_with_its_code(self, code):
        decision = step(fresh(), Start(T0, refusal=Refusal(code)))
        assert (decision.record.status, decision.reply.code, decision.record.last_code) == (
            Status.FAILED, code, code)
        assert decision.record.subject is None
        assert Notify() in decision.effects


# (verdicts in order) -> (reply code, attempts left, status) after each
CONFIRM_TABLE = [
    ([None], [(None, 3, Status.VERIFIED)]),
    ([CODE_MISMATCH, None], [("4013", 2, Status.PENDING), (None, 2, Status.VERIFIED)]),
    ([CODE_MISMATCH, CODE_MISMATCH, None],
     [("4013", 2, Status.PENDING), ("4013", 1, Status.PENDING), (None, 1, Status.VERIFIED)]),
    ([CODE_MISMATCH] * 3,
     [("4013", 2, Status.PENDING), ("4013", 1, Status.PENDING), ("4301", 0, Status.FAILED)]),
    # The upstream no longer knows the request: answered, no attempt spent.
    ([Refusal("4018"), None], [("4018", 3, Status.PENDING), (None, 3, Status.VERIFIED)]),
    ([Refusal("4018"), CODE_MISMATCH, Refusal("4018")],
     [("4018", 3, Status.PENDING), ("4013", 2, Status.PENDING), ("4018", 2, Status.PENDING)]),
]


class TestConfirm:
    @pytest.mark.parametrize(("verdicts", "expected"), CONFIRM_TABLE)
    def test_verdicts_against_the_caps(self, verdicts, expected):
        record = started()
        seen = []
        for refusal in verdicts:
            decision = step(record, verdict(refusal))
            record = decision.record
            seen.append((decision.reply.code, record.attempts_left, record.status))
        assert seen == expected

    def test_certified_grants_like_a_matching_code(self):
        record = started()
        decision = step(record, verdict())
        assert (decision.record.state, decision.record.last_code) == ("verified", "2000")
        assert decision.effects == (DisarmTimer(TimerKind.SESSION, record.expires_at),
                                    ArmTimer(TimerKind.RESULT, T0 + 1 + 600_000), Notify())

    def test_a_verdict_about_another_code_counts_as_wrong(self):
        """A verdict on an id the verification no longer waits for (the code was replaced)
        never verifies."""
        decision = step(started(), verdict(None, upstream_id="imp_old"))
        assert (decision.reply.code, decision.record.status, decision.record.attempts_left) == (
            "4013", Status.PENDING, 2)

    def test_a_verdict_on_a_verification_veriflow_issued_never_verifies(self):
        """A record of the other mode has no upstream id: a verdict is a wrong code there."""
        record = step(fresh(), Start(T0, issued_code=IssuedCode("h", "s"))).record
        decision = step(record, verdict(None))
        assert (decision.reply.code, decision.record.status) == ("4013", Status.PENDING)

    def test_a_plain_code_on_an_upstream_verification_never_verifies(self):
        decision = step(started(), Confirm(T0 + 1, code_hash="anything"))
        assert (decision.reply.code, decision.record.status) == ("4013", Status.PENDING)

    @pytest.mark.parametrize(("record_of", "code", "status"), [
        ("verified", "4018", 409), ("failed", "4301", None), ("expired", "4018", 404)])
    def test_no_longer_pending_answers_as_in_contract_section_7(self, record_of, code, status):
        record = started()
        if record_of == "verified":
            record = step(record, verdict()).record
        elif record_of == "failed":
            for _ in range(3):
                record = step(record, verdict(CODE_MISMATCH)).record
        else:
            record = step(record, TimerFired(T0 + 600_000, TimerKind.SESSION)).record
        decision = step(record, verdict())
        assert (decision.reply.code, decision.reply.http_status) == (code, status)
        assert decision.record.status is record.status


class TestResend:
    def test_a_resend_takes_the_upstreams_new_id_and_only_it_verifies(self):
        record = started()
        decision = step(record, Resend(T0 + 1, upstream_id="imp_2"))
        record = decision.record
        assert (record.upstream_id, record.code_generation, record.resends_left) == ("imp_2", 2, 2)
        assert not any(isinstance(e, SendSms) for e in decision.effects)
        assert step(record, verdict(None, upstream_id=UID)).record.status is Status.PENDING
        assert step(record, verdict(None, upstream_id="imp_2")).record.status is Status.VERIFIED

    def test_three_resends_then_4302(self):
        record = started()
        codes = []
        for n in range(4):
            decision = step(record, Resend(T0 + 1, upstream_id=f"imp_{n}"))
            record = decision.record
            codes.append((decision.reply.code, record.status))
        assert codes == [(None, Status.PENDING)] * 3 + [("4302", Status.FAILED)]

    def test_attempts_are_not_restored_by_a_resend(self):
        record = step(started(), verdict(CODE_MISMATCH)).record
        record = step(record, Resend(T0 + 2, upstream_id="imp_2")).record
        assert record.attempts_left == 2

    def test_the_upstreams_refusal_of_a_resend_ends_it(self):
        decision = step(started(), Resend(T0 + 1, refusal=Refusal("2910")))
        assert (decision.reply.code, decision.record.status) == ("2910", Status.FAILED)
