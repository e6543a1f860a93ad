"""The gender digit agrees with the birth century (contract section 2): 1/2/5/6 before 2000,
3/4/7/8 from 2000, 9/0 before 1900 (and births before 1900 are refused: nobody alive was born
then, so 9 and 0 never agree); otherwise 400 3001 and nothing is created."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from tests.conftest import Api, start_body


@pytest.fixture
async def store_client() -> AsyncIterator[Any]:
    """fakeredis only: these tests check request validation, not the store."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


def with_subject(**changes: Any) -> dict[str, Any]:
    body = start_body("01012121212")
    return body | {"subject": body["subject"] | changes}


AGREE = [("19900101", "1"), ("19900101", "2"), ("19991231", "5"), ("19000101", "6"),
         ("20000101", "3"), ("20100505", "4"), ("20000101", "7"), ("20151111", "8"), ("20100505", 4)]
DISAGREE = [("19900101", "3"), ("19991231", "4"), ("19900101", "7"), ("19900101", "8"),
            ("20000101", "1"), ("20100505", "2"), ("20000101", "5"), ("20151111", "6"),
            ("19900101", "9"), ("19900101", "0"), ("20000101", "9"), ("18991231", "9"), ("18991231", "0")]


class TestStart:
    @pytest.mark.parametrize(("birth", "gender"), AGREE)
    async def test_a_digit_of_the_birth_century_is_accepted(self, api: Api, birth, gender):
        status, body = await api.call("POST", "/v1/verifications", with_subject(birth=birth, gender_digit=gender))
        assert status == 201, body

    @pytest.mark.parametrize(("birth", "gender"), DISAGREE)
    async def test_a_digit_of_another_century_is_3001(self, api: Api, birth, gender):
        status, body = await api.call("POST", "/v1/verifications", with_subject(birth=birth, gender_digit=gender))
        assert (status, body["error"]["code"]) == (400, "3001")
        assert "verification" not in body
        await api.rt.dispatcher.read_once(block_ms=1)
        assert (await api.call("GET", "/sim/sms?phone=01012121212", key=None))[1] == {"messages": []}


class TestMotp:
    async def motp_start(self, api: Api, **subject: Any) -> tuple[int, Any]:
        status, _ = await api.call("POST", "/v1/motp/users",
                                   {"user_id": "u-century", "name": "홍길동", "phone": "01012121212"})
        assert status == 201
        return await api.call("POST", "/v1/verifications", {
            "channel": "motp", "motp_user_id": "u-century",
            "subject": {"name": "홍길동", "phone": "01012121212", **subject}})

    @pytest.mark.parametrize("subject", [
        {"birth": "19900101", "gender_digit": "3"}, {"birth": "20100101", "gender_digit": "1"},
        {"gender_digit": "9"}, {"gender_digit": "0"},
    ])
    async def test_the_optional_fields_are_checked_together(self, api: Api, subject):
        """mOTP's birth and gender digit are optional; given, they must agree (9/0 never do)."""
        status, body = await self.motp_start(api, **subject)
        assert (status, body["error"]["code"]) == (400, "3001")

    @pytest.mark.parametrize("subject", [
        {"birth": "20100101", "gender_digit": "4"}, {"gender_digit": "2"}, {"birth": "19900101"}, {},
    ])
    async def test_agreeing_or_absent_fields_are_accepted(self, api: Api, subject):
        status, body = await self.motp_start(api, **subject)
        assert status == 201, body
