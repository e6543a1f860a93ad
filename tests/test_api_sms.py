"""The SMS flow through the real aiohttp server, with the simulator as the upstream."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import OTHER_KEY, Api, start_body


class TestHappyPath:
    async def test_start_code_confirm_redeem(self, api: Api):
        """Start -> the SMS arrives -> confirm -> key token -> result once -> completed."""
        started = await api.start("010-1111-2222", tx_id="order-1", service_name="Acme")
        assert started["status"] == "pending"
        assert started["state"] == "code_sent"
        assert (started["attempts_left"], started["resends_left"]) == (3, 3)
        assert "key_token" not in started
        messages = await api.inbox("01011112222")
        assert len(messages) == 1
        assert "[Acme]" in messages[0]["text"]
        code = messages[0]["code"]
        status, confirmed = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        assert status == 200
        assert confirmed["status"] == "verified"
        token = confirmed["key_token"]
        status, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert (status, read["key_token"]) == (200, token)
        status, result = await api.call("POST", "/v1/results", {"key_token": token})
        assert status == 200
        assert result["result"] == {
            "name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": "01011112222",
            "carrier": "SKT", "is_mvno": False, "channel": "sms", "verified_at": confirmed["created_at"][:0]
            + result["result"]["verified_at"],
        }
        status, again = await api.call("POST", "/v1/results", {"key_token": token})
        assert (status, again["error"]["code"]) == (409, "4000")
        status, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert read["status"] == "completed"
        assert "key_token" not in read
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert record.subject is None, "personal data deleted once redeemed"

    async def test_codes_are_never_stored_in_plain_text(self, api: Api):
        """Neither the record nor the outbox holds the code as sent."""
        started = await api.start("01033334444")
        redis = api.rt.store.redis
        raw_outbox = [fields for _, fields in await redis.xrange(api.rt.store.keys.outbox(int(started["id"][:4], 16)))]
        code = await api.latest_code("01033334444")
        record = await redis.hgetall(api.rt.store.keys.record(started["id"]))
        blob = repr(record) + repr(raw_outbox)
        assert code not in blob
        assert "01033334444" not in blob
        assert "홍길동".encode() not in b"".join(record.values())


class TestErrors:
    async def test_wrong_codes_then_4301(self, api: Api):
        """422 4013 with attempts 2 then 1, then 429 4301 failed, then the same code again."""
        started = await api.start()
        path = f"/v1/verifications/{started['id']}/confirm"
        results = []
        for _ in range(4):
            status, body = await api.call("POST", path, {"code": "000000"})
            results.append((status, body["error"]["code"], body["error"]["retryable"],
                            body["verification"]["attempts_left"], body["verification"]["status"]))
        assert results == [
            (422, "4013", True, 2, "pending"),
            (422, "4013", True, 1, "pending"),
            (429, "4301", False, 0, "failed"),
            (429, "4301", False, 0, "failed"),
        ]

    async def test_resend_cap(self, api: Api):
        """Three resends succeed (a new code each); the 4th ends it 429 4302."""
        started = await api.start("01055556666")
        path = f"/v1/verifications/{started['id']}/resend"
        await api.latest_code("01055556666")
        for count, left in ((2, 2), (3, 1), (4, 0)):
            status, body = await api.call("POST", path)
            assert (status, body["resends_left"]) == (200, left)
            await api.latest_code("01055556666", count=count)
        status, body = await api.call("POST", path)
        assert (status, body["error"]["code"], body["verification"]["status"]) == (429, "4302", "failed")
        assert len(await api.inbox("01055556666")) == 4

    async def test_only_the_newest_code_is_accepted(self, api: Api):
        """A resend replaces the code."""
        started = await api.start("01077778888")
        first = await api.latest_code("01077778888")
        await api.call("POST", f"/v1/verifications/{started['id']}/resend")
        second = await api.latest_code("01077778888", count=2)
        path = f"/v1/verifications/{started['id']}/confirm"
        if first != second:
            status, body = await api.call("POST", path, {"code": first})
            assert (status, body["error"]["code"]) == (422, "4013")
        status, body = await api.call("POST", path, {"code": second})
        assert (status, body["status"]) == (200, "verified")

    @pytest.mark.parametrize("body", [
        None, [], {"channel": "sms"}, {"channel": "fax", "subject": {}},
        start_body(phone="12345"), start_body() | {"subject": start_body()["subject"] | {"birth": "19901399"}},
        start_body() | {"subject": start_body()["subject"] | {"carrier": "XYZ"}},
        start_body() | {"callback_url": "ftp://example.com"},
    ])
    async def test_invalid_start_is_3001_and_creates_nothing(self, api: Api, body):
        """Malformed or invalid input: 400 3001, nothing created, no SMS."""
        status, answer = await api.call("POST", "/v1/verifications", body)
        assert (status, answer["error"]["code"]) == (400, "3001")
        assert await api.rt.store.redis.keys("vf:{*}:v:*") == []

    async def test_not_json_is_3001(self, api: Api):
        """A body that is not JSON at all is 3001 too."""
        async with api.session.post(api.base + "/v1/verifications", data=b"{not json",
                                    headers={"Authorization": "Bearer test-key-0001"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "3001"

    @pytest.mark.settings(allow_private_callbacks=False)
    async def test_private_callback_refused_unless_allowed(self, api: Api):
        """A loopback callback URL is 400 3001 when private networks are not allowed."""
        status, body = await api.call("POST", "/v1/verifications",
                                      start_body(callback_url="http://127.0.0.1:9/hook"))
        assert (status, body["error"]["code"]) == (400, "3001")

    @pytest.mark.parametrize(("phone", "code"), [("01000002910", "2910"), ("01000004016", "4016")])
    async def test_carrier_refusal_at_start(self, api: Api, phone, code):
        """Magic numbers: the carrier refuses at start, 422 with the verification failed."""
        status, body = await api.call("POST", "/v1/verifications", start_body(phone))
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, code, False)
        assert body["verification"]["status"] == "failed"
        assert body["verification"]["last_code"] == code

    @pytest.mark.parametrize("code", ["4022", "4023"])
    async def test_addon_check_at_confirm_is_recoverable(self, api: Api, code):
        """Magic numbers: a right code held by the carrier's add-on check, 422, still pending."""
        phone = f"0100000{code}"
        started = await api.start(phone)
        otp = await api.latest_code(phone)
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": otp})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, code, True)
        assert body["verification"]["status"] == "pending"
        assert body["verification"]["attempts_left"] == 3

    async def test_duplicate_live_tx_id_is_4007(self, api: Api):
        """A client's tx_id is unique while its verification is live; free again once it ends."""
        first = await api.start(tx_id="tx-dup")
        status, body = await api.call("POST", "/v1/verifications", start_body(tx_id="tx-dup"))
        assert (status, body["error"]["code"]) == (409, "4007")
        other = api.session
        async with other.post(api.base + "/v1/verifications", json=start_body(tx_id="tx-dup"),
                              headers={"Authorization": f"Bearer {OTHER_KEY}"}) as resp:
            assert resp.status == 201, "another client's tx_id is its own"
        await api.call("POST", f"/v1/verifications/{first['id']}/cancel")
        await api.start(tx_id="tx-dup")

    async def test_english_messages(self, api: Api):
        """Accept-Language: en gives the English customer message; Korean by default."""
        status, ko = await api.call("GET", "/v1/verifications/00000000000000000000000000ff")
        status, en = await api.call("GET", "/v1/verifications/00000000000000000000000000ff",
                                    headers={"Accept-Language": "en-US,en;q=0.9"})
        assert status == 404
        assert ko["error"]["code"] == en["error"]["code"] == "4001"
        assert ko["error"]["message"] != en["error"]["message"]
        assert en["error"]["message"].isascii()


class TestAuthAndTenancy:
    async def test_missing_or_wrong_key_is_4101(self, api: Api):
        """Every /v1 route but the catalog needs a valid key."""
        for key in (None, "wrong-key-xyz"):
            status, body = await api.call("POST", "/v1/verifications", start_body(), key=key)
            assert (status, body["error"]["code"]) == (401, "4101")
        status, body = await api.call("GET", "/v1/catalog", key=None)
        assert status == 200
        assert len(body["codes"]) >= 49

    async def test_another_clients_verification_is_unknown(self, api: Api):
        """Tenant isolation: another client's id answers exactly like an unknown one."""
        started = await api.start()
        vid = started["id"]
        for method, path, expected in [
            ("GET", f"/v1/verifications/{vid}", (404, "4001")),
            ("POST", f"/v1/verifications/{vid}/confirm", (404, "4018")),
            ("POST", f"/v1/verifications/{vid}/resend", (404, "4003")),
            ("POST", f"/v1/verifications/{vid}/cancel", (404, "4001")),
        ]:
            body = {"code": "123456"} if path.endswith("confirm") else None
            status, answer = await api.call(method, path, body, key=OTHER_KEY)
            assert (status, answer["error"]["code"]) == expected
            assert "verification" not in answer
        record = await api.rt.store.load(vid)
        assert record is not None
        assert record.version == 1, "nothing changed"

    async def test_another_clients_key_token_is_4000(self, api: Api):
        """A key token only works for the client whose verification it is."""
        started = await api.start("01012120000")
        code = await api.latest_code("01012120000")
        _, verified = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        status, body = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]}, key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (409, "4000")
        status, _ = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]})
        assert status == 200


class TestIdempotency:
    async def test_same_key_same_body_replays_the_first_answer(self, api: Api):
        """One verification, one SMS, the same response twice; another body is 409."""
        headers = {"Idempotency-Key": "idem-1"}
        body = start_body("01090909090")
        first = await api.call("POST", "/v1/verifications", body, headers=headers)
        second = await api.call("POST", "/v1/verifications", body, headers=headers)
        assert first == second
        assert first[0] == 201
        assert len(await api.rt.store.redis.keys("vf:{*}:v:*")) == 1
        status, answer = await api.call("POST", "/v1/verifications", start_body("01090909091"), headers=headers)
        assert (status, answer["error"]["code"]) == (409, "3002")


    async def test_a_redeemed_result_is_replayed_briefly_and_sealed(self, api: Api):
        """The replay of /v1/results (personal data) is sealed and kept about a minute, not a day."""
        started = await api.start("01012129898")
        code = await api.latest_code("01012129898")
        _, verified = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        headers = {"Idempotency-Key": "redeem-once"}
        first = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]}, headers=headers)
        again = await api.call("POST", "/v1/results", {"key_token": verified["key_token"]}, headers=headers)
        assert first == again
        assert first[0] == 200
        slot = api.rt.store.keys.idempotency("acme", "redeem-once")
        assert 0 < await api.rt.store.redis.ttl(slot) <= 60
        assert b"01012129898" not in await api.rt.store.redis.get(slot)


class TestConcurrency:
    async def test_30_simultaneous_wrong_codes_count_exactly_to_the_cap(self, api: Api):
        """Two wrong codes get 4013, one gets 4301; the rest see the failed verification."""
        started = await api.start()
        path = f"/v1/verifications/{started['id']}/confirm"
        answers = await asyncio.gather(*(api.call("POST", path, {"code": "000000"}) for _ in range(30)))
        codes = sorted(body["error"]["code"] for _, body in answers)
        assert codes.count("4013") == 2
        assert codes.count("4301") == 30 - 2
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert (record.status.value, record.attempts_left, record.version) == ("failed", 0, 4)

    async def test_20_simultaneous_right_codes_yield_one_success(self, api: Api):
        """Exactly one 200 with a key token; the others are 409 4018; one result redeemed."""
        started = await api.start("01020202020")
        code = await api.latest_code("01020202020")
        path = f"/v1/verifications/{started['id']}/confirm"
        answers = await asyncio.gather(*(api.call("POST", path, {"code": code}) for _ in range(20)))
        ok = [body for status, body in answers if status == 200]
        assert len(ok) == 1
        assert {(s, b["error"]["code"]) for s, b in answers if s != 200} == {(409, "4018")}
        tokens = {body["key_token"] for body in ok}
        redeems = await asyncio.gather(*(api.call("POST", "/v1/results", {"key_token": t})
                                         for t in list(tokens) * 5))
        assert sorted(status for status, _ in redeems) == [200] + [409] * 4
