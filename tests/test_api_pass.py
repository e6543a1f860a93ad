"""PASS through the real server: start -> the simulator's push -> approve/deny -> signed webhook,
the push timeout, refusals at start, and the fallback to SMS on the same verification."""

from __future__ import annotations

from typing import Any

import pytest

from machines.events import Refusal
from tests.conftest import OTHER_KEY, Api
from tests.phone import read, sim_items, start

PHONE = "01086420975"
UNDER_14 = {"birth": "20200101", "gender_digit": "3"}


def subject_of(phone: str, **changes: str) -> dict[str, Any]:
    return {"subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": phone,
                        "carrier": "SKT", **changes}}


async def press(api: Api, phone: str, button: str) -> tuple[int, dict]:
    return await api.call("POST", f"/sim/pass/{phone}/{button}", key=None)


class TestPush:
    async def test_start_push_approve_verified_result_once(self, api: Api):
        """The push waits; confirm is 6702 until the user approves; approval verifies at once."""
        status, started = await start(api, "pass", PHONE)
        assert (status, started["state"], started["status"]) == (201, "push_sent", "pending")
        assert "display_code" not in started
        vid = started["id"]
        assert await sim_items(api, "pass", PHONE) == [{"reference": f"{vid}:1", "state": "waiting"}]
        status, body = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (409, "6702", True)
        status, answer = await press(api, PHONE, "approve")
        assert (status, answer) == (200, {"state": "approved", "webhook_status": 200})
        status, verified = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, verified["status"], verified["last_code"]) == (200, "verified", "2000")
        status, result = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert (status, result["result"]["channel"]) == (200, "pass")
        status, _ = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert status == 409
        assert await sim_items(api, "pass", PHONE) == [{"reference": f"{vid}:1", "state": "approved"}]

    async def test_deny_is_6705_6205(self, api: Api):
        """The user cancels in the app: failed 6705 with detail 6205, and no fallback."""
        _, started = await start(api, "pass", PHONE)
        await sim_items(api, "pass", PHONE)
        status, answer = await press(api, PHONE, "deny")
        assert answer["state"] == "denied"
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["detail_code"]) == (422, "6705", "6205")
        assert (body["verification"]["status"], body["verification"]["fallback"]) == ("failed", [])

    async def test_no_answer_within_push_timeout_is_6706(self, api: Api, clock):
        """The push timer ends it 6706 by itself; a late approval changes nothing."""
        _, started = await start(api, "pass", PHONE)
        await sim_items(api, "pass", PHONE)
        clock.advance(180)
        assert await api.rt.timers.run_once() >= 1
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert (record.status.value, record.last_code, record.subject) == ("failed", "6706", None)
        _, answer = await press(api, PHONE, "approve")
        assert answer["webhook_status"] == 200
        body = await read(api, started["id"])
        assert (body["status"], body["last_code"]) == ("failed", "6706")

    async def test_a_push_that_failed_at_start_is_sent_again_by_resend(self, api: Api):
        """6752 at start: 422 but pending and retryable; resend sends the push; approval verifies."""
        phone = "01000006752"
        status, body = await start(api, "pass", phone)
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, "6752", True)
        assert (body["verification"]["status"], body["verification"]["state"]) == ("pending", "push_failed")
        vid = body["verification"]["id"]
        status, again = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, again["state"]) == (200, "push_sent")
        await sim_items(api, "pass", phone)
        await press(api, phone, "approve")
        assert (await read(api, vid))["status"] == "verified"

    @pytest.mark.parametrize(("phone", "code", "detail"), [
        ("01067036212", "6703", "6212"), ("01067056033", "6705", "6033"), ("01067066203", "6706", "6203"),
    ])
    async def test_outcomes_the_app_reports_at_once(self, api: Api, phone, code, detail):
        """Magic numbers: the app answers as soon as the push arrives, with a detail code."""
        _, started = await start(api, "pass", phone)
        await sim_items(api, "pass", phone)
        body = await read(api, started["id"])
        assert (body["status"], body["last_code"], body["last_detail_code"]) == ("failed", code, detail)


class TestRefusalsAtStart:
    @pytest.mark.parametrize(("phone", "code", "detail"), [
        ("01067016030", "6701", "6030"), ("01067016210", "6701", "6210"), ("01067016116", "6701", "6116"),
        ("01067046113", "6704", "6113"), ("01067046209", "6704", "6209"), ("01067046041", "6704", "6041"),
        ("01067046060", "6704", "6060"), ("01067076036", "6707", "6036"), ("01067076211", "6707", "6211"),
        ("01000006707", "6707", None), ("01000006751", "6751", None), ("01000006753", "6753", None),
        ("01000006754", "6754", None), ("01000006755", "6755", None), ("01000006756", "6756", None),
        ("01000006757", "6757", None),
    ])
    async def test_refusals_carry_their_detail_codes(self, api: Api, phone, code, detail):
        """422 with code and detail; the verification failed; SMS offered exactly for 6707 and 6751."""
        status, body = await start(api, "pass", phone)
        assert (status, body["error"]["code"], body["error"]["detail_code"]) == (422, code, detail)
        assert body["error"]["retryable"] is False
        view = body["verification"]
        assert (view["status"], view["last_code"], view["last_detail_code"]) == ("failed", code, detail)
        assert view["fallback"] == (["sms"] if code in {"6707", "6751"} else [])

    async def test_a_subject_under_14_is_6751_without_asking_the_upstream(self, api: Api, monkeypatch):
        """Birth date + gender digit say 6 years old: 6751 and the gateway never hears of it."""
        asked: list[str] = []

        async def spy(reference: str, channel: str, subscriber: Any) -> Refusal | None:
            asked.append(channel)
            return None

        monkeypatch.setattr(api.rt.providers.carriers, "check_subscriber", spy)
        status, body = await api.call("POST", "/v1/verifications",
                                      {"channel": "pass", **subject_of(PHONE, **UNDER_14)})
        assert (status, body["error"]["code"], body["verification"]["fallback"]) == (422, "6751", ["sms"])
        assert asked == []
        status, _ = await api.call("POST", "/v1/verifications", {"channel": "pass", **subject_of(PHONE)})
        assert (status, asked) == (201, ["pass"])


class TestFallback:
    async def test_a_refused_pass_becomes_an_sms_flow_on_the_same_verification(self, api: Api):
        """6707 lists sms; fallback sends a code by SMS; the code verifies the same id; result once."""
        phone = "01067076036"
        _, refused = await start(api, "pass", phone, tx_id="order-9")
        vid = refused["verification"]["id"]
        status, switched = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert status == 200, switched
        assert (switched["id"], switched["channel"], switched["status"], switched["state"]) == (
            vid, "sms", "pending", "code_sent")
        assert (switched["fallback"], switched["last_code"], switched["attempts_left"]) == ([], None, 3)
        status, body = await api.call("POST", "/v1/verifications",
                                      {"channel": "sms", "tx_id": "order-9", **subject_of("01011112222")})
        assert (status, body["error"]["code"]) == (409, "4007"), "the live flow holds its tx_id again"
        code = await api.latest_code(phone)
        status, verified = await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": code})
        assert (status, verified["status"]) == (200, "verified")
        status, result = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert (status, result["result"]["channel"], result["result"]["phone"]) == (200, "sms", phone)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert (status, body["error"]["code"]) == (409, "3005")

    async def test_an_under_14_subject_falls_back_to_sms(self, api: Api):
        """The age refusal offers SMS too."""
        _, refused = await api.call("POST", "/v1/verifications", {"channel": "pass", **subject_of(PHONE, **UNDER_14)})
        vid = refused["verification"]["id"]
        status, switched = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert (status, switched["channel"], switched["state"]) == (200, "sms", "code_sent")
        assert len(await api.inbox(PHONE)) == 1

    async def test_the_offer_and_the_subject_are_gone_after_the_session(self, api: Api, clock):
        """When the session deadline passes, the timer deletes the subject and withdraws the offer."""
        _, refused = await start(api, "pass", "01067076036")
        vid = refused["verification"]["id"]
        record = await api.rt.store.load(vid)
        assert record is not None
        assert record.subject is not None
        clock.advance(420)
        assert await api.rt.timers.run_once() >= 1
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.status.value, record.last_code, record.subject, record.fallback) == (
            "failed", "6707", None, None)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert (status, body["error"]["code"], body["verification"]["fallback"]) == (409, "3005", [])

    async def test_fallback_refusals(self, api: Api):
        """Not offered: 409 3005; unknown or another client's: 404 4001; a bad channel: 400 3001."""
        _, started = await start(api, "pass", PHONE)
        vid = started["id"]
        status, body = await api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert (status, body["error"]["code"], body["verification"]["state"]) == (409, "3005", "push_sent")
        _, refused = await start(api, "pass", "01000006707")
        other = refused["verification"]["id"]
        status, body = await api.call("POST", f"/v1/verifications/{other}/fallback", {"channel": "sms"},
                                      key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (404, "4001")
        status, body = await api.call("POST", "/v1/verifications/0000ffffffffffffffffffffffff/fallback",
                                      {"channel": "sms"})
        assert (status, body["error"]["code"]) == (404, "4001")
        status, body = await api.call("POST", f"/v1/verifications/{other}/fallback", {"channel": "fax"})
        assert (status, body["error"]["code"]) == (400, "3001")
        status, body = await api.call("POST", f"/v1/verifications/{other}/fallback", {"channel": "ars"})
        assert (status, body["error"]["code"]) == (409, "3005")
        assert (await read(api, other))["fallback"] == ["sms"], "a refused request changes nothing"
