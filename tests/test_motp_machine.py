"""The mOTP machine as a table: (state, user, event) -> (state, code, user), with no I/O.

The user travels with each event, as the shell loads it; `SaveMotpUser` is what the shell
commits, so `step` applies it to the user as a commit would.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machines import motp_user
from machines.channels import MOTP
from machines.core import NEW, Decision, UndefinedTransitionError
from machines.effects import ArmTimer, DisarmTimer, Notify, SaveMotpUser
from machines.events import Cancel, MotpConfirm, MotpStart, Redeem, Refusal, Resend, Tick, TimerFired
from machines.motp import AWAITING_CODE
from machines.motp_user import MotpUser
from machines.record import Policy, Verification
from machines.vocabulary import Channel, Status, TimerKind
from tests import machine_table

POLICY = Policy(session_ttl_s=420, result_ttl_s=600, max_verify_attempts=5, max_resends=0)
T0 = machine_table.T0
STEP = T0 // 60_000


def user(**changes: object) -> MotpUser:
    base = MotpUser(ref="u1", client_id="c1", version=3, secret="sealed", device=1, name_hash="n",
                    phone_hash="p", registered_at=0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fresh() -> Verification:
    return machine_table.fresh(Channel.MOTP, motp_user="u1")


step = machine_table.stepper(MOTP, POLICY)


def saved(decision: Decision) -> MotpUser | None:
    """The user as the commit writes it (its version bumped), or None when it is not written."""
    found = [e for e in decision.effects if isinstance(e, SaveMotpUser)]
    if not found:
        return None
    (effect,) = found
    return dataclasses.replace(effect.after, version=effect.before.version + 1)


def started(u: MotpUser | None = None) -> Verification:
    return step(fresh(), MotpStart(T0, user=u or user())).record


def wrong(u: MotpUser, at: int = T0 + 1) -> MotpConfirm:
    return MotpConfirm(at, user=u, step=None)


class TestStart:
    def test_start_awaits_the_code_with_the_users_remaining_attempts(self):
        """Pending, the session armed, attempts_left = max_failures - the user's failures."""
        decision = step(fresh(), MotpStart(T0, user=user(failures=2)))
        record = decision.record
        assert (record.state, record.status) == (AWAITING_CODE, Status.PENDING)
        assert (record.attempts_left, record.resends_left) == (3, None)
        assert decision.effects == (ArmTimer(TimerKind.SESSION, T0 + 420_000),)
        assert decision.reply.ok

    @pytest.mark.parametrize(("event", "code"), [
        (MotpStart(T0, user=None), "AP005"),
        (MotpStart(T0, user=user(), refusal=Refusal("AP005")), "AP005"),
        (MotpStart(T0, user=user(failures=5, locked_at=1)), "AP902"),
    ])
    def test_refusals_end_it_at_once(self, event, code):
        """Unknown user or a different name/phone: AP005; a locked user: AP902. The user is untouched."""
        decision = step(fresh(), event)
        assert (decision.record.status, decision.record.last_code, decision.reply.code) == (
            Status.FAILED, code, code)
        assert decision.record.subject is None
        assert saved(decision) is None


class TestConfirm:
    def test_a_fresh_step_verifies_resets_the_count_and_spends_the_step(self):
        """Right code: verified; the user's count is 0 and the step is the last accepted one."""
        u = user(failures=3, last_step=STEP - 5)
        record = started(u)
        decision = step(record, MotpConfirm(T0 + 5, user=u, step=STEP))
        assert (decision.record.status, decision.record.last_code) == (Status.VERIFIED, "2000")
        assert saved(decision) == dataclasses.replace(u, failures=0, last_step=STEP, version=4)
        assert DisarmTimer(TimerKind.SESSION, record.expires_at) in decision.effects
        assert Notify() in decision.effects

    @pytest.mark.parametrize("spent", [STEP, STEP + 1])
    def test_an_accepted_step_is_never_accepted_again(self, spent):
        """A step at or before the last accepted one: AP901, still pending, not counted."""
        u = user(failures=1, last_step=spent)
        decision = step(started(u), MotpConfirm(T0 + 5, user=u, step=STEP))
        assert (decision.reply.code, decision.record.status) == ("AP901", Status.PENDING)
        assert saved(decision) is None

    def test_wrong_codes_count_on_the_user_and_the_fifth_locks_it(self):
        """AP901 with attempts 4..1, then the 5th: AP902 (423), failed, the user locked with 5."""
        u = user()
        record = started(u)
        seen = []
        for n in range(5):
            decision = step(record, wrong(u, T0 + n))
            record, u = decision.record, saved(decision) or u
            seen.append((decision.reply.code, record.attempts_left, record.status, u.failures, u.locked))
        assert seen == [
            ("AP901", 4, Status.PENDING, 1, False), ("AP901", 3, Status.PENDING, 2, False),
            ("AP901", 2, Status.PENDING, 3, False), ("AP901", 1, Status.PENDING, 4, False),
            ("AP902", 0, Status.FAILED, 5, True),
        ]
        assert u.locked_at == T0 + 4
        assert (record.last_code, record.subject) == ("AP902", None)

    def test_failures_count_across_verifications(self):
        """The count is the user's: a new verification does not reset it."""
        u = user()
        for n in range(4):
            u = saved(step(started(u), wrong(u))) or u
            assert u.failures == n + 1
        decision = step(started(u), wrong(u))
        assert decision.reply.code == "AP902"
        assert (saved(decision) or u).locked

    def test_a_user_locked_meanwhile_fails_a_pending_verification(self):
        """Another verification locked the user: any code, even the right one, is AP902."""
        record = started(user())
        locked = user(failures=5, locked_at=T0)
        decision = step(record, MotpConfirm(T0 + 1, user=locked, step=STEP))
        assert (decision.reply.code, decision.record.status) == ("AP902", Status.FAILED)
        assert saved(decision) is None

    def test_a_code_after_the_session_is_404_4018_and_expires_it(self):
        """The 7-minute session: expired with 4001; the late confirm is answered 404 4018."""
        decision = step(started(), MotpConfirm(T0 + 420_000, user=user(), step=STEP))
        assert (decision.record.status, decision.record.last_code) == (Status.EXPIRED, "4001")
        assert (decision.reply.code, decision.reply.http_status) == ("4018", 404)
        assert saved(decision) is None

    def test_resend_has_nothing_to_send(self):
        """The app shows the codes: resend of a pending mOTP verification is 400 3001, no change."""
        decision = MOTP.decide(started(), Resend(T0 + 1), POLICY)
        assert decision.reply.code == "3001"
        assert not decision.changed


def verified() -> Verification:
    return step(started(), MotpConfirm(T0 + 1, user=user(), step=STEP)).record


def failed() -> Verification:
    return step(fresh(), MotpStart(T0, user=user(failures=5, locked_at=1))).record


def completed() -> Verification:
    return machine_table.redeemed(step, verified(), T0 + 2)


def expired() -> Verification:
    return step(started(), TimerFired(T0 + 420_000)).record


def canceled() -> Verification:
    return machine_table.canceled(step, started())


class TestFinished:
    """Contract section 7, the mOTP column: as SMS."""

    @pytest.mark.parametrize(("make", "confirm", "resend"), [
        (verified, ("4018", 409), ("4150", 409)),
        (completed, ("4150", 409), ("4150", 409)),
        (failed, ("AP902", None), ("AP902", None)),
        (expired, ("4018", 404), ("4003", 404)),
        (canceled, ("4018", 404), ("4003", 404)),
    ])
    def test_confirm_and_resend_answers(self, make, confirm, resend):
        """Each finished status answers as the table says and changes nothing, the user included."""
        record = make()
        for event, expected in ((MotpConfirm(T0 + 3, user=user(), step=None), confirm), (Resend(T0 + 3), resend)):
            decision = MOTP.decide(record, event, POLICY)
            assert (decision.reply.code, decision.reply.http_status) == expected
            assert not decision.changed


ALL_EVENTS = [
    MotpConfirm(T0 + 1, user=user(), step=STEP), MotpConfirm(T0 + 1, user=user(), step=None),
    MotpConfirm(T0 + 1, user=user(failures=5, locked_at=1), step=STEP), MotpConfirm(T0 + 1, user=None, step=None),
    Resend(T0 + 1), Cancel(T0 + 1), Redeem(T0 + 1, token_ok=True), Redeem(T0 + 1, token_ok=False),
    TimerFired(T0 + 1), TimerFired(T0 + 10**9), Tick(T0 + 1),
    MotpStart(T0, user=user()),
]


class TestExhaustive:
    @pytest.mark.parametrize("make", [fresh, started, verified, completed, failed, expired, canceled])
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
    def test_every_state_answers_every_event(self, make, event):
        """No (state, event) pair is undefined; finished records never come back to life."""
        record = make()
        try:
            decision = MOTP.decide(record, event, POLICY)
        except UndefinedTransitionError as exc:  # pragma: no cover - the failure message
            pytest.fail(str(exc))
        if not record.is_live and record.state != NEW:
            assert decision.record.status is record.status
            assert saved(decision) is None

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([None, STEP - 1, STEP, STEP + 1]), max_size=15))
    def test_the_count_never_passes_the_cap_nor_accepts_a_step_twice(self, steps):
        """Any sequence of codes over fresh verifications: failures stay within 0..5, a locked user
        stays locked, and every accepted step is newer than all before it."""
        u, accepted = user(), []
        for n, s in enumerate(steps):
            record = started(u) if not u.locked else failed()
            decision = MOTP.decide(record, MotpConfirm(T0 + n, user=u, step=s), POLICY)
            after = saved(decision) or u
            if decision.record.status is Status.VERIFIED:
                accepted.append(after.last_step)
            assert 0 <= after.failures <= 5
            assert after.locked == (after.failures == 5)
            if u.locked:
                assert after == u
            u = after
        assert accepted == sorted(set(accepted))


def test_user_codec_round_trips():
    """The user hash keeps every field, absent optionals included."""
    for u in (user(), user(failures=5, locked_at=7, last_step=9, unlocked_at=3)):
        assert motp_user.from_fields({k.encode(): v.encode() for k, v in motp_user.to_fields(u).items()}) == u
