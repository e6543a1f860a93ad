"""ARS through the real server: start -> the simulator's call -> keypad -> signed webhook -> result."""

from __future__ import annotations

import orjson
import pytest

from machines.ars import CALL_OUTCOMES
from tests.conftest import Api
from tests.phone import read, sim_items, start

PHONE = "01024681357"


async def keypad(api: Api, phone: str, digits: str) -> tuple[int, dict]:
    return await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": digits}, key=None)


class TestHappyPath:
    async def test_start_call_keypad_verified_result_once(self, api: Api):
        """The digits shown at start ring in; keying them verifies at once; the result is read once."""
        status, started = await start(api, "ars", PHONE, tx_id="ars-1")
        assert status == 201
        assert (started["channel"], started["status"], started["state"]) == ("ars", "pending", "calling")
        assert len(started["display_code"]) == 2
        assert started["display_code"].isdigit()
        assert started["resends_left"] == 2
        vid = started["id"]
        calls = await sim_items(api, "ars", PHONE)
        assert calls == [{"reference": f"{vid}:1", "display_code": started["display_code"], "state": "ringing",
                          "outcome": None}]

        status, body = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (409, "4500", True)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, body["error"]["code"]) == (409, "4501")

        status, answer = await keypad(api, PHONE, started["display_code"])
        assert (status, answer) == (200, {"outcome": "2000", "webhook_status": 200})
        verified = await read(api, vid)
        assert (verified["status"], verified["last_code"]) == ("verified", "2000")
        token = verified["key_token"]
        status, confirmed = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, confirmed["key_token"]) == (200, token)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, body["error"]["code"]) == (409, "4502")

        status, result = await api.call("POST", "/v1/results", {"key_token": token})
        assert status == 200
        assert (result["result"]["channel"], result["result"]["phone"]) == ("ars", PHONE)
        status, again = await api.call("POST", "/v1/results", {"key_token": token})
        assert (status, again["error"]["code"]) == (409, "4000")
        assert (await read(api, vid))["status"] == "completed"
        assert (await sim_items(api, "ars", PHONE))[0] == {
            "reference": f"{vid}:1", "display_code": started["display_code"], "state": "ended", "outcome": "2000"}

    async def test_the_outbox_carries_the_digits_sealed(self, api: Api):
        """The call's digits travel sealed in the outbox entry, like an SMS code."""
        _, started = await start(api, "ars", "01013572468")
        shard = int(started["id"][:4], 16)
        entries = await api.rt.store.redis.xrange(api.rt.store.keys.outbox(shard))
        payloads = [orjson.loads(fields[b"e"]) for _, fields in entries]
        calls = [p for p in payloads if p["kind"] == "call" and p["id"] == started["id"]]
        assert len(calls) == 1
        assert len(calls[0]["code"]) > 20
        opened = api.rt.secrets.unseal(calls[0]["code"], f"{started['id']}|call|1").decode()
        assert opened == started["display_code"]


class TestWrongDigits:
    async def test_wrong_digits_then_a_new_call_then_success(self, api: Api):
        """4602 leaves it pending; resend places call 2 with new digits; call 2 succeeds."""
        _, started = await start(api, "ars", PHONE)
        vid = started["id"]
        await sim_items(api, "ars", PHONE)
        wrong = "xx"
        status, answer = await keypad(api, PHONE, wrong)
        assert answer["outcome"] == "4602"
        pending = await read(api, vid)
        assert (pending["status"], pending["state"], pending["last_code"]) == ("pending", "wrong_digits", "4602")
        status, body = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, "4602", True)
        status, again = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, again["state"], again["resends_left"], again["last_code"]) == (200, "calling", 1, None)
        calls = await sim_items(api, "ars", PHONE, count=2)
        assert [c["state"] for c in calls] == ["ended", "ringing"]
        assert calls[1]["display_code"] == again["display_code"]
        _, answer = await keypad(api, PHONE, again["display_code"])
        assert answer["outcome"] == "2000"
        assert (await read(api, vid))["status"] == "verified"

    async def test_the_wrong_digits_of_the_last_call_end_it_4301(self, api: Api):
        """max_calls 3 counts every call: the third 4602 ends it failed 4301 (429)."""
        _, started = await start(api, "ars", PHONE)
        vid = started["id"]
        for count in (1, 2, 3):
            await sim_items(api, "ars", PHONE, count=count)
            await keypad(api, PHONE, "xx")
            if count < 3:
                status, _ = await api.call("POST", f"/v1/verifications/{vid}/resend")
                assert status == 200
        status, body = await api.call("POST", f"/v1/verifications/{vid}/confirm", {})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (429, "4301", False)
        assert (body["verification"]["status"], body["verification"]["resends_left"]) == ("failed", 0)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, body["error"]["code"]) == (429, "4301")


class TestMagicNumbers:
    @pytest.mark.parametrize("code", sorted(CALL_OUTCOMES))
    async def test_every_call_outcome_reaches_the_client(self, api: Api, code):
        """01000004611 and friends: the call centre reports the outcome; it ends the verification."""
        phone = f"0100000{code}"
        _, started = await start(api, "ars", phone)
        calls = await sim_items(api, "ars", phone)
        if code == "4698":  # the carrier's check after the digits were keyed in
            assert calls[0]["state"] == "ringing"
            _, answer = await keypad(api, phone, started["display_code"])
            assert answer["outcome"] == "4698"
        body = await read(api, started["id"])
        assert (body["status"], body["last_code"]) == ("failed", code)
        status, confirm = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {})
        expected_status = 502 if code in {"4698", "4699"} else 422
        assert (status, confirm["error"]["code"], confirm["error"]["retryable"]) == (expected_status, code, False)

    @pytest.mark.parametrize("code", ["2910", "4016"])
    async def test_carrier_refusal_at_start(self, api: Api, code):
        """The subscriber check refuses an ARS start too: 422, failed, no call placed."""
        phone = f"0100000{code}"
        status, body = await start(api, "ars", phone)
        assert (status, body["error"]["code"], body["verification"]["status"]) == (422, code, "failed")
        await api.rt.dispatcher.read_once(block_ms=1)
        _, calls = await api.call("GET", f"/sim/ars/{phone}", key=None)
        assert calls == {"calls": []}

    async def test_keypad_without_a_ringing_call_is_409(self, api: Api):
        """The simulator answers 409 until the service's call reaches it."""
        status, _ = await keypad(api, "01099990000", "12")
        assert status == 409


class TestSession:
    async def test_the_session_expires_by_timer(self, api: Api, clock):
        """No result within session_ttl_s (420 s): expired by the timer; then 404 4018 / 4003."""
        _, started = await start(api, "ars", PHONE)
        await sim_items(api, "ars", PHONE)
        clock.advance(420)
        assert await api.rt.timers.run_once() >= 1
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert (record.status.value, record.last_code, record.subject) == ("expired", "4001", None)
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {})
        assert (status, body["error"]["code"]) == (404, "4018")
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        assert (status, body["error"]["code"]) == (404, "4003")
        _, answer = await keypad(api, PHONE, started["display_code"])
        assert answer["webhook_status"] == 200, "a late result is acknowledged and changes nothing"
        assert (await api.rt.store.load(started["id"])).status.value == "expired"  # type: ignore[union-attr]
