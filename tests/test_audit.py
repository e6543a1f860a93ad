"""The audit trail (contract section 10): every event that changed a verification, with who caused
it, written in the commit of the transition; on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from machines.channels import SMS
from machines.core import Step
from machines.events import Cancel, Confirm, Tick
from machines.vocabulary import Channel
from service.store import audit
from service.store.store import CommitStatus
from tests.conftest import OTHER_KEY, Api
from tests.phone import flush_outbox, read, sim_items, start
from tests.test_api_motp import confirm as motp_confirm
from tests.test_api_motp import enrol, now_code, wrong
from tests.test_api_motp import started as motp_started

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def events(api: Api, vid: str, key: str | None = None) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/v1/verifications/{vid}/events", **({"key": key} if key else {}))
    assert status == 200, body
    assert set(body) == {"events"}
    for event in body["events"]:
        assert set(event) == {"at", "from", "to", "trigger", "actor", "code", "detail_code"}
        assert RFC3339.match(event["at"])
    return list(body["events"])


def steps(trail: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["from"], e["to"], e["trigger"], e["actor"], e["code"], e["detail_code"]) for e in trail]


class TestTheMachineRecordsItsSteps:
    """Pure: `decide` lists the triggers that changed something, in the order they fired."""

    def test_an_expire_before_the_requests_own_trigger_is_its_own_step(self):
        from tests.test_sms_machine import POLICY, RIGHT, T0, started  # noqa: PLC0415 - the SMS table's helpers

        record = started()
        late = T0 + POLICY.session_ttl_s * 1000
        decision = SMS.decide(record, Confirm(late, code_hash=RIGHT), POLICY)
        assert decision.steps == (Step(late, "expire", "code_sent", "expired", "4018"),)
        wrong = SMS.decide(record, Confirm(T0 + 1, code_hash="other"), POLICY)
        assert wrong.steps == (Step(T0 + 1, "confirm", "code_sent", "code_sent", "4013"),)
        assert SMS.decide(record, Tick(T0 + 1), POLICY).steps == ()
        assert SMS.decide(decision.record, Confirm(late + 1, code_hash=RIGHT), POLICY).steps == ()

    def test_entries_round_trip_and_an_expiry_is_the_timers(self):
        steps_ = (Step(5, "start", "new", "code_sent"), Step(6, "expire", "code_sent", "expired", "4018"))
        raw = {b"@1": audit.encode_all(steps_, "provider:x", creation=True).encode(), b"state": b"expired"}
        assert audit.events_of(raw) == [
            {"at": 5, "from": None, "to": "code_sent", "trigger": "start", "actor": "provider:x", "code": None,
             "detail_code": None},
            {"at": 6, "from": "code_sent", "to": "expired", "trigger": "expire", "actor": "timer", "code": "4018",
             "detail_code": None}]


class TestSms:
    async def test_a_full_flow_wrong_code_resend_confirm_redeem(self, api: Api):
        """Creation has no `from`; a wrong code and a resend change only counters and are events."""
        started = await api.start("01011112222", tx_id="order-1")
        vid = started["id"]
        path = f"/v1/verifications/{vid}"
        status, _ = await api.call("POST", path + "/confirm", {"code": "000000"})
        assert status == 422
        status, _ = await api.call("POST", path + "/resend")
        assert status == 200
        code = await api.latest_code("01011112222")
        status, verified = await api.call("POST", path + "/confirm", {"code": code})
        assert status == 200
        status, _ = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert status == 200
        await read(api, vid)  # reads change nothing: not events
        trail = await events(api, vid)
        assert steps(trail) == [
            (None, "code_sent", "start", "client", None, None),
            ("code_sent", "code_sent", "confirm", "client", "4013", None),
            ("code_sent", "code_sent", "resend", "client", None, None),
            ("code_sent", "verified", "confirm", "client", "2000", None),
            ("verified", "completed", "redeem", "client", None, None),
        ]
        assert [e["at"] for e in trail] == sorted(e["at"] for e in trail)

    async def test_answers_that_change_nothing_are_not_events(self, api: Api):
        """A confirm after the end (4301 again), a resend of a finished one: no new events."""
        vid = (await api.start())["id"]
        for _ in range(5):
            await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": "000000"})
        await api.call("POST", f"/v1/verifications/{vid}/resend")
        await api.call("POST", f"/v1/verifications/{vid}/cancel")
        assert steps(await events(api, vid)) == [
            (None, "code_sent", "start", "client", None, None),
            ("code_sent", "code_sent", "confirm", "client", "4013", None),
            ("code_sent", "code_sent", "confirm", "client", "4013", None),
            ("code_sent", "failed", "confirm", "client", "4301", None),
        ]

    async def test_a_refusal_at_start_is_one_event(self, api: Api):
        """The carrier's refusal (the simulator's magic number for 2910) creates a failed record."""
        status, body = await api.call("POST", "/v1/verifications", {
            "channel": "sms", "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1",
                                          "phone": "01000002910", "carrier": "SKT"}})
        assert status == 422, body
        vid = body["verification"]["id"]
        assert steps(await events(api, vid)) == [(None, "failed", "start", "client", "2910", None)]

    async def test_cancel(self, api: Api):
        vid = (await api.start())["id"]
        await api.call("POST", f"/v1/verifications/{vid}/cancel")
        assert steps(await events(api, vid))[-1] == ("code_sent", "canceled", "cancel", "client", None, None)


class TestExpiry:
    async def test_expiry_by_the_timer(self, api: Api, clock):
        vid = (await api.start())["id"]
        clock.advance(api.rt.settings.sms.session_ttl_s + 1)
        assert await api.rt.timers.run_once() == 1
        assert steps(await events(api, vid))[1:] == [("code_sent", "expired", "expire", "timer", "4018", None)]

    async def test_expiry_noticed_by_a_read_or_a_request_is_the_timers(self, api: Api, clock):
        """Before the worker runs, a read expires it (actor timer); a confirm then adds nothing. An
        `expire` before the request's own trigger is its own event."""
        first = (await api.start("01011110001"))["id"]
        second = (await api.start("01011110002"))["id"]
        clock.advance(api.rt.settings.sms.session_ttl_s + 1)
        assert (await read(api, first))["status"] == "expired"
        status, _ = await api.call("POST", f"/v1/verifications/{first}/confirm", {"code": "000000"})
        assert status == 404
        status, _ = await api.call("POST", f"/v1/verifications/{second}/cancel")
        assert status == 409
        for vid in (first, second):
            assert steps(await events(api, vid))[1:] == [("code_sent", "expired", "expire", "timer", "4018", None)]
        await api.rt.timers.run_once()  # their timers fire and change nothing more
        assert len(await events(api, first)) == 2

    async def test_a_verified_token_that_is_never_redeemed(self, api: Api, clock):
        started = await api.start("01011113333")
        code = await api.latest_code("01011113333")
        await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        clock.advance(api.rt.settings.result_ttl_s + 1)
        await api.rt.timers.run_once()
        assert steps(await events(api, started["id"]))[-1] == (
            "verified", "expired", "expire", "timer", "4000", None)


class TestArsAndPass:
    async def test_ars_wrong_digits_call_again_then_verified_by_the_provider(self, api: Api):
        phone = "01024681357"
        _, started = await start(api, "ars", phone)
        vid = started["id"]
        await sim_items(api, "ars", phone)
        await api.call("POST", f"/v1/verifications/{vid}/confirm", {})  # 4500: no result yet, no event
        wrong_digits = "00" if started["display_code"] != "00" else "11"
        await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": wrong_digits}, key=None)
        status, again = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert status == 200, again
        await sim_items(api, "ars", phone, count=2)
        await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": again["display_code"]}, key=None)
        assert steps(await events(api, vid)) == [
            (None, "calling", "start", "client", None, None),
            ("calling", "wrong_digits", "report", "provider:simulator", "4602", None),
            ("wrong_digits", "calling", "resend", "client", None, None),
            ("calling", "verified", "report", "provider:simulator", "2000", None),
        ]

    async def test_pass_approved_by_the_provider_and_a_duplicate_report_adds_nothing(self, api: Api):
        phone = "01086420975"
        _, started = await start(api, "pass", phone)
        vid = started["id"]
        await sim_items(api, "pass", phone)
        await api.call("POST", f"/v1/verifications/{vid}/confirm", {})  # 6702: not an event
        await api.call("POST", f"/sim/pass/{phone}/approve", key=None)
        status, verified = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert status == 200
        await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert steps(await events(api, vid)) == [
            (None, "push_sent", "start", "client", None, None),
            ("push_sent", "verified", "report", "provider:simulator", "2000", None),
            ("verified", "completed", "redeem", "client", None, None),
        ]

    async def test_pass_push_timeout_then_fallback_to_sms(self, api: Api, clock):
        """A push timeout is the timer's (6706); a refusal offering SMS, then the switch: the hand-over
        and the SMS start are two events of one commit."""
        phone = "01086420976"
        _, started = await start(api, "pass", phone)
        clock.advance(api.rt.settings.policy(Channel.PASS).push_timeout_s + 1)
        await api.rt.timers.run_once()
        assert steps(await events(api, started["id"]))[1:] == [
            ("push_sent", "failed", "expire", "timer", "6706", "6203")]
        _, refused = await start(api, "pass", "01067076036")
        vid = refused["verification"]["id"]
        status, _ = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert status == 200
        assert steps(await events(api, vid)) == [
            (None, "failed", "start", "client", "6707", "6036"),
            ("failed", "new", "fallback", "client", None, None),
            ("new", "code_sent", "start", "client", None, None),
        ]


class TestMotp:
    async def test_wrong_code_then_right_code(self, api: Api):
        app = await enrol(api)
        vid = await motp_started(api)
        status, _ = await motp_confirm(api, vid, wrong(now_code(app, api)))
        assert status == 422
        status, _ = await motp_confirm(api, vid, now_code(app, api))
        assert status == 200
        assert steps(await events(api, vid)) == [
            (None, "awaiting_code", "start", "client", None, None),
            ("awaiting_code", "awaiting_code", "confirm", "client", "AP901", None),
            ("awaiting_code", "verified", "confirm", "client", "2000", None),
        ]


class TestStore:
    async def test_another_clients_verification_is_unknown(self, api: Api):
        vid = (await api.start())["id"]
        status, body = await api.call("GET", f"/v1/verifications/{vid}/events", key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (404, "4001")
        status, body = await api.call("GET", "/v1/verifications/0000aaaaaaaaaaaaaaaaaaaaaaaa/events")
        assert (status, body["error"]["code"]) == (404, "4001")
        status, body = await api.call("GET", "/v1/verifications/nonsense/events")
        assert (status, body["error"]["code"]) == (404, "4001")

    async def test_the_trail_is_fields_of_the_record_itself(self, api: Api):
        """One field per commit, `@<version>`, in the record's hash: the same key, so the same slot
        and exactly the same lifetime; the record's own fields are read as before."""
        vid = (await api.start())["id"]
        await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": "000000"})
        raw = await api.rt.store.redis.hgetall(api.rt.store.keys.record(vid))
        assert sorted(k for k in raw if k.startswith(b"@")) == [b"@1", b"@2"]
        assert raw[b"@2"].split(b"|")[1:] == [b"code_sent", b"code_sent", b"confirm", b"client", b"4013", b""]
        record = await api.rt.store.load(vid)
        assert record is not None
        assert record.attempts_left == 2
        assert all(len(v) < 256 for v in raw.values()), "the record stays a listpack (hash-max-listpack-value 256)"

    async def test_a_lost_race_writes_no_event(self, api: Api):
        """A commit refused for a stale version writes nothing of its trail; the retry writes one."""
        vid = (await api.start())["id"]
        rt = api.rt
        record = await rt.store.load(vid)
        assert record is not None
        decision = rt.transactor.decide(record, Tick(rt.clock.now_ms()))
        stale = rt.transactor.decide(record, Cancel(rt.clock.now_ms()))
        assert decision.steps == ()
        await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": "000000"})  # wins version 2
        result = await rt.store.commit(rt.transactor.plan.ops(stale, rt.clock.now_ms()))
        assert result.status is CommitStatus.CONFLICT
        assert [e["trigger"] for e in await events(api, vid)] == ["start", "confirm"]

    async def test_concurrent_wrong_codes_are_each_one_event(self, api: Api):
        """Three wrong codes at once: each commit wins its own version and writes its own event."""
        vid = (await api.start())["id"]
        await asyncio.gather(*(api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": "000000"})
                               for _ in range(3)))
        assert [(e["to"], e["code"]) for e in await events(api, vid)][1:] == [
            ("code_sent", "4013"), ("code_sent", "4013"), ("failed", "4301")]

    async def test_entries_hold_no_personal_data(self, api: Api):
        started = await api.start("01099998888", tx_id="order-secret")
        await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": "000000"})
        code = await api.latest_code("01099998888")
        raw = await api.rt.store.redis.hgetall(api.rt.store.keys.record(started["id"]))
        entries = b"\n".join(v for k, v in raw.items() if k.startswith(b"@")).decode().split("\n")
        assert len(entries) == 2
        for secret in ("01099998888", "홍길동", "19900101", "order-secret", code, started["id"]):
            assert all(secret not in entry for entry in entries)
        assert all(len(entry) < 64 for entry in entries), "compact entries"


@pytest.mark.parametrize("flows", [1])
async def test_the_outbox_is_untouched_by_the_trail(api: Api, flows: int):
    """The trail is beside the record: delivering the SMS (the outbox) writes no event."""
    vid = (await api.start())["id"]
    await flush_outbox(api)
    assert len(await events(api, vid)) == flows
