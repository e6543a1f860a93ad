"""Acceptance tests of the SMS channel against the written contract (API.md §2-§7).

Everything goes through the real HTTP server with the simulator as the upstream. Time moves
with the ManualClock; timers and outbox effects are run one step at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import API_KEY, OTHER_KEY, Api, free_port, start_body

ENVELOPE_FIELDS = {"code", "detail_code", "message", "description", "retryable"}
OBJECT_FIELDS = {"id", "channel", "tx_id", "status", "state", "last_code", "last_detail_code",
                 "attempts_left", "resends_left", "fallback", "created_at", "expires_at"}
STATUSES = {"pending", "verified", "completed", "failed", "expired", "canceled"}
TERMINAL = {"completed", "failed", "expired", "canceled"}
RESULT_FIELDS = {"name", "birth", "gender_digit", "phone", "carrier", "is_mvno", "channel", "verified_at"}
UNKNOWN_ID = "0000" + "ab" * 12
MALFORMED_ID = "no-such-verification"
SESSION_TTL_S = 600
RESULT_TTL_S = 600


# ----------------------------------------------------------------------------- helpers


def path(verification_id: str, action: str = "") -> str:
    return f"/v1/verifications/{verification_id}" + (f"/{action}" if action else "")


def parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"{text} has no offset (RFC 3339 needs one)"
    return parsed


def error_of(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict), body
    assert "error" in body, body
    error = body["error"]
    assert set(error) >= ENVELOPE_FIELDS, error
    return dict(error)


def answer(status: int, body: Any) -> tuple[int, str, bool]:
    error = error_of(body)
    return status, error["code"], error["retryable"]


async def record_count(api: Api) -> int:
    return len(await api.rt.store.redis.keys("vf:{*}:v:*"))


async def outbox_entries(api: Api) -> int:
    total = 0
    for stream in api.rt.store.keys.all_outboxes():
        total += int(await api.rt.store.redis.xlen(stream))
    return total


async def sim_messages(api: Api, phone: str) -> list[dict[str, Any]]:
    """The SMS delivered so far, after performing every pending outbox effect."""
    await api.rt.dispatcher.read_once(block_ms=1)
    status, body = await api.call("GET", f"/sim/sms?phone={phone}", key=None)
    assert status == 200
    return list(body["messages"])


async def confirm(api: Api, vid: str, code: str, **kw: Any) -> tuple[int, Any]:
    return await api.call("POST", path(vid, "confirm"), {"code": code}, **kw)


async def verified(api: Api, phone: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    started = await api.start(phone, **extra)
    code = await api.latest_code(phone)
    status, body = await confirm(api, started["id"], code)
    assert status == 200, body
    assert body["status"] == "verified"
    return started, body


async def wrong_code(api: Api, vid: str, right: str | None = None) -> tuple[int, Any]:
    code = "000000" if right != "000000" else "111111"
    return await confirm(api, vid, code)


async def failed_by_attempts(api: Api, phone: str, **extra: Any) -> dict[str, Any]:
    started = await api.start(phone, **extra)
    for _ in range(3):
        status, body = await wrong_code(api, started["id"])
    assert answer(status, body) == (429, "4301", False)
    return started


async def failed_by_resends(api: Api, phone: str, **extra: Any) -> dict[str, Any]:
    started = await api.start(phone, **extra)
    for _ in range(3):
        status, body = await api.call("POST", path(started["id"], "resend"))
        assert status == 200, body
    status, body = await api.call("POST", path(started["id"], "resend"))
    assert answer(status, body) == (429, "4302", False)
    return started


async def expire_session(api: Api, clock: Any) -> None:
    clock.advance(SESSION_TTL_S)
    assert await api.rt.timers.run_once() >= 1


async def stored_status(api: Api, vid: str) -> str:
    record = await api.rt.store.load(vid)
    assert record is not None
    return str(record.status.value)


def contract_signature_ok(secret: str, body: bytes, header: str | None, now_s: float) -> bool:
    """§6, written from the contract: t=<unix seconds>,v1=HMAC-SHA256(secret, "<t>." + raw body)."""
    assert header, "no X-Veriflow-Signature header"
    parts = dict(item.strip().split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(now_s - timestamp) <= 300 and hmac.compare_digest(expected, parts["v1"])


def provider_signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass
class Receiver:
    """A client's callback endpoint on loopback."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def statuses(self) -> list[str]:
        return [event["verification"]["status"] for event in self.events()]


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def handle(request: web.Request) -> web.Response:
        target = holder[0]
        target.received.append((dict(request.headers), await request.read()))
        return web.Response(status=target.replies.pop(0) if target.replies else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    holder.append(Receiver(str(server.make_url("/hook"))))
    yield holder[0]
    await server.close()


async def deliver(api: Api) -> None:
    """Perform every effect the outbox holds now."""
    for _ in range(3):
        await api.rt.dispatcher.read_once(block_ms=1)


# ----------------------------------------------------------------------------- §2 conventions


AUTH_ROUTES = [
    ("POST", "/v1/verifications", start_body()),
    ("GET", path(UNKNOWN_ID), None),
    ("POST", path(UNKNOWN_ID, "confirm"), {"code": "123456"}),
    ("POST", path(UNKNOWN_ID, "resend"), None),
    ("POST", path(UNKNOWN_ID, "cancel"), None),
    ("POST", "/v1/results", {"key_token": "x" * 40}),
]


class TestAuth:
    @pytest.mark.parametrize(("method", "route", "body"), AUTH_ROUTES)
    @pytest.mark.parametrize("key", [None, "wrong-key", ""])
    async def test_missing_or_wrong_key_is_401_4101(self, api: Api, method, route, body, key):
        """§2: every /v1 route except webhooks and the catalog needs a key; missing or wrong: 401 4101."""
        status, answer_body = await api.call(method, route, body, key=key)
        assert answer(status, answer_body) == (401, "4101", False)
        assert await record_count(api) == 0

    async def test_key_of_another_scheme_is_4101(self, api: Api):
        """§2: the key is sent as `Authorization: Bearer <api_key>`; another scheme is refused."""
        status, body = await api.call("POST", "/v1/verifications", start_body(), key=None,
                                      headers={"Authorization": f"Basic {API_KEY}"})
        assert answer(status, body) == (401, "4101", False)
        assert await record_count(api) == 0

    async def test_a_live_verification_is_not_touched_without_a_key(self, api: Api):
        """§2: a request without a key changes nothing on an existing verification."""
        started = await api.start("01012300001")
        for action, body in (("confirm", {"code": "000000"}), ("resend", None), ("cancel", None)):
            status, reply = await api.call("POST", path(started["id"], action), body, key=None)
            assert (status, error_of(reply)["code"]) == (401, "4101")
            assert "verification" not in reply
        status, read = await api.call("GET", path(started["id"]))
        assert status == 200
        assert (read["status"], read["attempts_left"], read["resends_left"]) == ("pending", 3, 3)


class TestTenantIsolation:
    @pytest.mark.parametrize(("method", "action", "body", "expected"), [
        ("GET", "", None, (404, "4001")),
        ("POST", "confirm", {"code": "123456"}, (404, "4018")),
        ("POST", "resend", None, (404, "4003")),
        ("POST", "cancel", None, None),
    ])
    async def test_another_clients_id_is_answered_like_an_unknown_one(self, api: Api, method, action, body,
                                                                       expected):
        """§2: another client's, an unknown or a malformed id get the same answer (GET 404 4001;
        confirm 404 4018 and resend 404 4003 as in §7)."""
        started = await api.start("01012300002")
        theirs = await api.call(method, path(started["id"], action), body, key=OTHER_KEY)
        unknown = await api.call(method, path(UNKNOWN_ID, action), body, key=OTHER_KEY)
        malformed = await api.call(method, path(MALFORMED_ID, action), body, key=OTHER_KEY)
        assert theirs == unknown == malformed
        status, reply = theirs
        if expected is not None:
            assert (status, error_of(reply)["code"]) == expected
        else:
            assert status == 404
        assert "verification" not in reply
        _, mine = await api.call("GET", path(started["id"]))
        assert (mine["status"], mine["attempts_left"], mine["resends_left"]) == ("pending", 3, 3)
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert record.version == 1

    async def test_a_right_code_from_another_client_does_not_verify(self, api: Api):
        """§2: a client sees only its own verifications, even with the right code in hand."""
        started = await api.start("01012300003")
        code = await api.latest_code("01012300003")
        status, reply = await confirm(api, started["id"], code, key=OTHER_KEY)
        assert (status, error_of(reply)["code"]) == (404, "4018")
        assert await stored_status(api, started["id"]) == "pending"

    async def test_another_clients_key_token_is_4000_and_not_spent(self, api: Api):
        """§2 + §4: results with another client's token answer like an unknown token (409 4000)."""
        _, done = await verified(api, "01012300004")
        theirs = await api.call("POST", "/v1/results", {"key_token": done["key_token"]}, key=OTHER_KEY)
        unknown = await api.call("POST", "/v1/results", {"key_token": "A" * len(done["key_token"])},
                                 key=OTHER_KEY)
        assert answer(*theirs) == (409, "4000", False)
        assert theirs == unknown
        status, body = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert status == 200, body

    @pytest.mark.settings(record_ttl_s=1)
    async def test_a_finished_verification_is_unknown_after_record_ttl(self, api: Api):
        """§2: a verification finished longer than record_ttl_s ago is answered like an unknown id."""
        started = await api.start("01012300005")
        status, _ = await api.call("POST", path(started["id"], "cancel"))
        assert status == 200
        unknown = await api.call("GET", path(UNKNOWN_ID))
        for _ in range(60):
            if (await api.call("GET", path(started["id"])))[0] == 404:
                break
            await asyncio.sleep(0.1)
        assert await api.call("GET", path(started["id"])) == unknown
        assert answer(*unknown) == (404, "4001", False)
        assert await api.call("POST", path(started["id"], "confirm"), {"code": "123456"}) == \
            await api.call("POST", path(UNKNOWN_ID, "confirm"), {"code": "123456"})


INVALID_STARTS = [
    pytest.param(None, id="no-body"),
    pytest.param([], id="array"),
    pytest.param("sms", id="string"),
    pytest.param({}, id="empty-object"),
    pytest.param({"channel": "sms"}, id="no-subject"),
    pytest.param({k: v for k, v in start_body().items() if k != "channel"}, id="no-channel"),
    pytest.param(start_body() | {"channel": "fax"}, id="unknown-channel"),
    pytest.param(start_body() | {"subject": "홍길동"}, id="subject-not-object"),
    *[pytest.param(start_body() | {"subject": {k: v for k, v in start_body()["subject"].items() if k != name}},
                   id=f"no-{name}") for name in ("name", "birth", "gender_digit", "phone", "carrier")],
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"name": ""}}, id="empty-name"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"phone": "12345"}}, id="short-phone"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"phone": "010-12ab-5678"}}, id="phone-letters"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"birth": "19901399"}}, id="bad-birth"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"gender_digit": "9"}}, id="bad-gender"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"carrier": "XYZ"}}, id="bad-carrier"),
    pytest.param(start_body() | {"subject": start_body()["subject"] | {"is_mvno": "yes"}}, id="bad-mvno"),
    pytest.param(start_body() | {"callback_url": "ftp://example.com/hook"}, id="bad-callback-scheme"),
    pytest.param(start_body() | {"callback_url": "not a url"}, id="bad-callback"),
    pytest.param(start_body() | {"tx_id": 12}, id="tx-id-not-string"),
]


class TestInvalidInput:
    @pytest.mark.parametrize("body", INVALID_STARTS)
    async def test_invalid_start_is_400_3001_and_nothing_is_created(self, api: Api, body):
        """§2: malformed JSON, missing or invalid fields: 400 3001, and nothing is created."""
        status, reply = await api.call("POST", "/v1/verifications", body)
        assert answer(status, reply) == (400, "3001", False)
        assert "verification" not in reply
        assert await record_count(api) == 0
        assert await outbox_entries(api) == 0
        assert await sim_messages(api, "01012345678") == []

    @pytest.mark.parametrize("raw", [b"{not json", b'{"channel": "sms",', b"\xff\xfe", b"null"])
    async def test_malformed_json_is_3001(self, api: Api, raw):
        """§2: a body that is not JSON (or not a JSON object) is 400 3001 and creates nothing."""
        async with api.session.post(api.base + "/v1/verifications", data=raw,
                                    headers={"Authorization": f"Bearer {API_KEY}",
                                             "Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            assert error_of(await resp.json(content_type=None))["code"] == "3001"
        assert await record_count(api) == 0

    @pytest.mark.parametrize("body", [None, {}, {"code": ""}, {"code": "abc123"}, {"code": None}, {"code": []}])
    async def test_confirm_without_a_code_is_3001_and_changes_nothing(self, api: Api, body):
        """§2: a confirm with a missing or invalid code is 400 3001 and spends no attempt."""
        started = await api.start("01012300006")
        status, reply = await api.call("POST", path(started["id"], "confirm"), body)
        assert (status, error_of(reply)["code"]) == (400, "3001")
        _, read = await api.call("GET", path(started["id"]))
        assert (read["status"], read["attempts_left"]) == ("pending", 3)

    async def test_confirm_with_malformed_json_is_3001(self, api: Api):
        """§2: malformed JSON on confirm is 400 3001 and spends no attempt."""
        started = await api.start("01012300007")
        async with api.session.post(api.base + path(started["id"], "confirm"), data=b'{"code":',
                                    headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 400
            assert error_of(await resp.json(content_type=None))["code"] == "3001"
        _, read = await api.call("GET", path(started["id"]))
        assert read["attempts_left"] == 3

    @pytest.mark.parametrize("body", [None, {}, {"key_token": ""}, {"key_token": 5}])
    async def test_results_without_a_token_is_3001(self, api: Api, body):
        """§2: results without a key_token is 400 3001 and spends nothing."""
        _, done = await verified(api, "01012300008")
        status, reply = await api.call("POST", "/v1/results", body)
        assert (status, error_of(reply)["code"]) == (400, "3001")
        status, _ = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert status == 200


class TestPhoneNumbers:
    @pytest.mark.parametrize("given", ["010-1234-0009", "01012340009"])
    async def test_phone_with_or_without_hyphens_is_stored_as_digits(self, api: Api, given):
        """§2: phone numbers are accepted with or without hyphens and stored as digits."""
        started = await api.start(given)
        messages = await api.inbox("01012340009")
        assert len(messages) == 1
        status, body = await confirm(api, started["id"], messages[0]["code"])
        assert status == 200
        status, result = await api.call("POST", "/v1/results", {"key_token": body["key_token"]})
        assert status == 200
        assert result["result"]["phone"] == "01012340009"


class TestErrorEnvelope:
    async def test_envelope_with_a_verification(self, api: Api):
        """§2: an error carries code, detail_code, message, description, retryable, and the
        verification as it now stands."""
        started = await api.start("01012300010")
        status, body = await wrong_code(api, started["id"])
        assert status == 422
        error = error_of(body)
        assert set(body) == {"error", "verification"}
        assert error["code"] == "4013"
        assert error["detail_code"] is None
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["description"], str)
        assert error["retryable"] is True
        _, now = await api.call("GET", path(started["id"]))
        assert body["verification"] == now

    async def test_envelope_without_a_verification(self, api: Api):
        """§2: an error about no verification has the envelope and no verification."""
        status, body = await api.call("GET", path(UNKNOWN_ID))
        assert status == 404
        assert set(body) == {"error"}
        assert error_of(body)["code"] == "4001"

    async def test_success_is_the_verification_itself(self, api: Api):
        """§2: a successful /v1/verifications answer is the verification object, not wrapped."""
        started = await api.start("01012300011")
        assert "error" not in started
        assert set(started) >= OBJECT_FIELDS

    async def test_messages_come_from_the_catalog(self, api: Api):
        """§2: `message` is the customer message of the code in the requested locale."""
        _, catalog = await api.call("GET", "/v1/catalog", key=None)
        first = {}
        for entry in catalog["codes"]:
            first.setdefault(entry["code"], entry)
        status, body = await api.call("GET", path(UNKNOWN_ID))
        assert status == 404
        assert error_of(body)["message"] == first["4001"]["messages"]["ko"]


class TestRetryable:
    async def test_retryable_follows_whether_the_verification_can_still_succeed(self, api: Api):
        """§2: retryable is true when the same verification can still succeed, false when terminal."""
        seen: list[tuple[str, bool, str]] = []

        def note(body: Any) -> None:
            seen.append((error_of(body)["code"], error_of(body)["retryable"], body["verification"]["status"]))

        started = await api.start("01012300012")
        for _ in range(3):
            note((await wrong_code(api, started["id"]))[1])
        other = await api.start("01012300013")
        for _ in range(3):
            await api.call("POST", path(other["id"], "resend"))
        note((await api.call("POST", path(other["id"], "resend")))[1])
        note((await api.call("POST", "/v1/verifications", start_body("01000002910")))[1])
        addon = await api.start("01000004022")
        code = await api.latest_code("01000004022")
        note((await confirm(api, addon["id"], code))[1])
        assert seen == [
            ("4013", True, "pending"), ("4013", True, "pending"), ("4301", False, "failed"),
            ("4302", False, "failed"), ("2910", False, "failed"), ("4022", True, "pending"),
        ]


class TestAcceptLanguage:
    @pytest.mark.parametrize(("header", "locale"), [
        (None, "ko"), ("ko", "ko"), ("ko-KR,ko;q=0.9", "ko"), ("en", "en"), ("en-US,en;q=0.9", "en"),
        ("fr-FR", "ko"),
    ])
    async def test_message_in_the_requested_locale(self, api: Api, header, locale):
        """§2: message is the customer message in the Accept-Language locale, Korean by default."""
        _, catalog = await api.call("GET", "/v1/catalog", key=None)
        entry = next(e for e in catalog["codes"] if e["code"] == "4013")
        started = await api.start("01012300014")
        headers = {"Accept-Language": header} if header else None
        status, body = await api.call("POST", path(started["id"], "confirm"), {"code": "000000"},
                                      headers=headers)
        assert status == 422
        assert error_of(body)["message"] == entry["messages"][locale]
        assert error_of(body)["code"] == "4013"


class TestIdempotency:
    async def test_start_replayed_with_the_same_key_and_body(self, api: Api):
        """§2: the same Idempotency-Key and body returns the first response without doing the work twice."""
        headers = {"Idempotency-Key": "contract-start-1"}
        body = start_body("01012300015")
        first = await api.call("POST", "/v1/verifications", body, headers=headers)
        second = await api.call("POST", "/v1/verifications", body, headers=headers)
        assert first[0] == 201
        assert first == second
        assert await record_count(api) == 1
        assert len(await sim_messages(api, "01012300015")) == 1

    async def test_simultaneous_replays_do_the_work_once(self, api: Api):
        """§2: the same Idempotency-Key and body never does the work twice, even sent at once."""
        headers = {"Idempotency-Key": "contract-start-race"}
        body = start_body("01012300083")
        answers = await asyncio.gather(*(api.call("POST", "/v1/verifications", body, headers=headers)
                                         for _ in range(8)))
        assert 201 in {status for status, _ in answers}
        assert await record_count(api) == 1
        assert len(await sim_messages(api, "01012300083")) == 1

    async def test_same_key_different_body_is_409(self, api: Api):
        """§2: the same Idempotency-Key with a different body is a 409 and does nothing."""
        headers = {"Idempotency-Key": "contract-start-2"}
        status, _ = await api.call("POST", "/v1/verifications", start_body("01012300016"), headers=headers)
        assert status == 201
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300017"), headers=headers)
        assert status == 409
        error = error_of(body)
        _, catalog = await api.call("GET", "/v1/catalog", key=None)
        assert error["code"] in {entry["code"] for entry in catalog["codes"]}
        assert await record_count(api) == 1
        assert await sim_messages(api, "01012300017") == []

    async def test_a_replayed_wrong_code_spends_one_attempt(self, api: Api):
        """§2: a replayed confirm returns the first answer and does not count a second attempt."""
        started = await api.start("01012300018")
        headers = {"Idempotency-Key": "contract-confirm-1"}
        first = await api.call("POST", path(started["id"], "confirm"), {"code": "000000"}, headers=headers)
        second = await api.call("POST", path(started["id"], "confirm"), {"code": "000000"}, headers=headers)
        assert first == second
        assert answer(*first) == (422, "4013", True)
        _, read = await api.call("GET", path(started["id"]))
        assert read["attempts_left"] == 2

    async def test_a_replayed_resend_sends_one_sms(self, api: Api):
        """§2: a replayed resend returns the first answer and sends one new code, not two."""
        started = await api.start("01012300019")
        await api.latest_code("01012300019")
        headers = {"Idempotency-Key": "contract-resend-1"}
        first = await api.call("POST", path(started["id"], "resend"), headers=headers)
        second = await api.call("POST", path(started["id"], "resend"), headers=headers)
        assert first == second
        assert first[0] == 200
        _, read = await api.call("GET", path(started["id"]))
        assert read["resends_left"] == 2
        assert len(await sim_messages(api, "01012300019")) == 2

    async def test_a_replayed_redeem_returns_the_result_again(self, api: Api):
        """§2: POST /v1/results with the same key and body answers the first response again."""
        _, done = await verified(api, "01012300020")
        headers = {"Idempotency-Key": "contract-result-1"}
        first = await api.call("POST", "/v1/results", {"key_token": done["key_token"]}, headers=headers)
        second = await api.call("POST", "/v1/results", {"key_token": done["key_token"]}, headers=headers)
        assert first[0] == 200
        assert first == second


# ----------------------------------------------------------------------------- §3 the verification object


class TestVerificationObject:
    async def test_fields_of_a_new_sms_verification(self, api: Api):
        """§3: the object has id, channel, tx_id, status, state, last_code, last_detail_code,
        attempts_left, resends_left, fallback, created_at, expires_at (RFC 3339)."""
        started = await api.start("01012300021", tx_id="order-21")
        assert set(started) >= OBJECT_FIELDS
        assert started["channel"] == "sms"
        assert started["tx_id"] == "order-21"
        assert started["status"] == "pending"
        assert isinstance(started["state"], str)
        assert started["state"]
        assert (started["attempts_left"], started["resends_left"]) == (3, 3)
        assert isinstance(started["fallback"], list)
        assert started.get("display_code") is None, "display_code is ARS only"
        assert "key_token" not in started
        created, expires = parse_time(started["created_at"]), parse_time(started["expires_at"])
        assert expires - created == timedelta(seconds=SESSION_TTL_S)

    async def test_tx_id_is_null_when_not_given(self, api: Api):
        """§3: tx_id is the client's id or null."""
        started = await api.start("01012300022")
        assert started["tx_id"] is None

    async def test_get_answers_the_same_object(self, api: Api):
        """§3/§4: GET returns the verification as start returned it."""
        started = await api.start("01012300023")
        status, read = await api.call("GET", path(started["id"]))
        assert status == 200
        assert read == started

    async def test_status_vocabulary_through_a_whole_life(self, api: Api, clock):
        """§3: status is one of pending|verified|completed|failed|expired|canceled."""
        started, done = await verified(api, "01012300024")
        seen = {started["status"], done["status"]}
        await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        seen.add((await api.call("GET", path(started["id"])))[1]["status"])
        failed = await failed_by_attempts(api, "01012300025")
        seen.add((await api.call("GET", path(failed["id"])))[1]["status"])
        canceled = await api.start("01012300026")
        seen.add((await api.call("POST", path(canceled["id"], "cancel")))[1]["status"])
        expiring = await api.start("01012300027")
        await expire_session(api, clock)
        seen.add((await api.call("GET", path(expiring["id"])))[1]["status"])
        assert seen == STATUSES

    async def test_key_token_only_while_verified(self, api: Api):
        """§3: key_token is present only while status is verified."""
        started = await api.start("01012300028")
        assert "key_token" not in started
        code = await api.latest_code("01012300028")
        _, body = await wrong_code(api, started["id"], code)
        assert "key_token" not in body["verification"]
        status, done = await confirm(api, started["id"], code)
        assert status == 200
        assert done["key_token"]
        _, read = await api.call("GET", path(started["id"]))
        assert read["key_token"] == done["key_token"]
        await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        _, read = await api.call("GET", path(started["id"]))
        assert read["status"] == "completed"
        assert "key_token" not in read

    async def test_canceled_verified_has_no_key_token_and_it_cannot_be_redeemed(self, api: Api):
        """§3: once canceled a verification no longer shows or honours its key_token."""
        started, done = await verified(api, "01012300029")
        status, canceled = await api.call("POST", path(started["id"], "cancel"))
        assert (status, canceled["status"]) == (200, "canceled")
        assert "key_token" not in canceled
        status, body = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert answer(status, body) == (409, "4000", False)

    async def test_unredeemed_token_expires_after_result_ttl(self, api: Api, clock):
        """§3: a verified key token never redeemed expires after result_ttl_s (status expired)."""
        started, _ = await verified(api, "01012300030")
        clock.advance(RESULT_TTL_S - 1)
        assert await api.rt.timers.run_once() == 0
        assert await stored_status(api, started["id"]) == "verified"
        clock.advance(1)
        assert await api.rt.timers.run_once() == 1
        assert await stored_status(api, started["id"]) == "expired"
        _, read = await api.call("GET", path(started["id"]))
        assert read["status"] == "expired"
        assert "key_token" not in read

    async def test_get_never_shows_personal_data(self, api: Api):
        """§3: only /v1/results returns the subject."""
        started, _ = await verified(api, "01012300031")
        _, read = await api.call("GET", path(started["id"]))
        text = json.dumps(read, ensure_ascii=False)
        assert "홍길동" not in text
        assert "01012300031" not in text
        assert "19900101" not in text
        assert "subject" not in read


async def end_completed(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    started, done = await verified(api, phone, **extra)
    status, _ = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
    assert status == 200
    return str(started["id"])


async def end_canceled(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    started = await api.start(phone, **extra)
    status, _ = await api.call("POST", path(started["id"], "cancel"))
    assert status == 200
    return str(started["id"])


async def end_canceled_verified(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    started, _ = await verified(api, phone, **extra)
    status, _ = await api.call("POST", path(started["id"], "cancel"))
    assert status == 200
    return str(started["id"])


async def end_attempts(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    return str((await failed_by_attempts(api, phone, **extra))["id"])


async def end_resends(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    return str((await failed_by_resends(api, phone, **extra))["id"])


async def end_session_expired(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    started = await api.start(phone, **extra)
    await expire_session(api, clock)
    return str(started["id"])


async def end_result_expired(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    started, _ = await verified(api, phone, **extra)
    clock.advance(RESULT_TTL_S)
    assert await api.rt.timers.run_once() == 1
    return str(started["id"])


async def end_refused_at_start(api: Api, clock: Any, phone: str, **extra: Any) -> str:
    status, body = await api.call("POST", "/v1/verifications", start_body("01000002910", **extra))
    assert status == 422
    return str(body["verification"]["id"])


ENDINGS = {
    "completed": (end_completed, "completed"),
    "canceled": (end_canceled, "canceled"),
    "canceled-verified": (end_canceled_verified, "canceled"),
    "failed-4301": (end_attempts, "failed"),
    "failed-4302": (end_resends, "failed"),
    "failed-2910": (end_refused_at_start, "failed"),
    "expired-session": (end_session_expired, "expired"),
    "expired-result": (end_result_expired, "expired"),
}


class TestSubjectDeletion:
    async def test_subject_is_kept_while_pending(self, api: Api):
        """§3 (baseline): the subject exists while the verification is live."""
        started = await api.start("01012300032")
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert record.subject is not None

    @pytest.mark.parametrize("ending", list(ENDINGS))
    async def test_subject_is_deleted_when_it_ends(self, api: Api, clock, ending):
        """§3: personal data (the subject) is deleted when the verification ends."""
        end, status = ENDINGS[ending]
        vid = await end(api, clock, "01012300033")
        record = await api.rt.store.load(vid)
        assert record is not None
        assert record.status.value == status
        assert record.subject is None
        raw = await api.rt.store.redis.hgetall(api.rt.store.keys.record(vid))
        blob = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in raw.values())
        assert "홍길동".encode() not in blob
        assert b"01012300033" not in blob

    @pytest.mark.parametrize("ending", list(ENDINGS))
    async def test_a_finished_verification_is_still_readable(self, api: Api, clock, ending):
        """§4: GET answers 200 + the verification in any status until record_ttl_s after it ended."""
        end, status = ENDINGS[ending]
        vid = await end(api, clock, "01012300034")
        got, read = await api.call("GET", path(vid))
        assert (got, read["status"]) == (200, status)
        assert read["status"] in TERMINAL


# ----------------------------------------------------------------------------- §4 routes


class TestStart:
    async def test_start_is_201_and_sends_one_sms(self, api: Api):
        """§4: POST /v1/verifications is 201 + the verification; the code goes to the phone."""
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300035"))
        assert status == 201
        assert body["status"] == "pending"
        messages = await api.inbox("01012300035")
        assert len(messages) == 1
        assert messages[0]["code"]
        assert messages[0]["code"] in messages[0]["text"]
        assert len(messages[0]["code"]) == 6

    async def test_optional_fields_are_accepted(self, api: Api, hook):
        """§4: tx_id, is_mvno, service_name and callback_url are optional fields of start."""
        body = start_body("01012300036", tx_id="t-36", service_name="Acme", callback_url=hook.url)
        body["subject"]["is_mvno"] = True
        status, started = await api.call("POST", "/v1/verifications", body)
        assert status == 201
        code = await api.latest_code("01012300036")
        _, done = await confirm(api, started["id"], code)
        _, result = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert result["result"]["is_mvno"] is True

    async def test_live_tx_id_is_409_4007(self, api: Api):
        """§4: 409 4007 when the client already has a live verification with this tx_id; nothing created."""
        await api.start("01012300037", tx_id="dup-37")
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300038", tx_id="dup-37"))
        assert answer(status, body) == (409, "4007", False)
        assert await record_count(api) == 1
        assert await sim_messages(api, "01012300038") == []

    async def test_verified_is_still_live_for_tx_id(self, api: Api):
        """§4: a verified (not yet redeemed) verification is live: its tx_id is still 4007."""
        await verified(api, "01012300039", tx_id="dup-39")
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300039", tx_id="dup-39"))
        assert answer(status, body) == (409, "4007", False)

    @pytest.mark.parametrize("ending", ["completed", "canceled", "canceled-verified", "failed-4301", "failed-4302",
                                        "failed-2910", "expired-session", "expired-result"])
    async def test_tx_id_is_free_once_the_verification_ended(self, api: Api, clock, ending):
        """§4: only a live verification holds its tx_id."""
        end, _ = ENDINGS[ending]
        await end(api, clock, "01012300040", tx_id="dup-40")
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300040", tx_id="dup-40"))
        assert status == 201, body

    async def test_simultaneous_starts_with_one_tx_id_create_one_verification(self, api: Api):
        """§4: of simultaneous starts with one tx_id, one is 201 and the others 409 4007."""
        answers = await asyncio.gather(*(
            api.call("POST", "/v1/verifications", start_body("01012300082", tx_id="race-82")) for _ in range(10)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] + [409] * 9
        assert {error_of(body)["code"] for status, body in answers if status == 409} == {"4007"}
        assert await record_count(api) == 1
        assert len(await sim_messages(api, "01012300082")) == 1

    async def test_tx_id_belongs_to_its_client(self, api: Api):
        """§4: 4007 is about *this client's* live verification: another client may use the same tx_id."""
        await api.start("01012300041", tx_id="shared-41")
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300041", tx_id="shared-41"),
                                      key=OTHER_KEY)
        assert status == 201, body


class TestConfirm:
    async def test_right_code_is_200_with_key_token(self, api: Api):
        """§4: confirm {code} is 200 + the verification with key_token."""
        started = await api.start("01012300042")
        code = await api.latest_code("01012300042")
        status, body = await confirm(api, started["id"], code)
        assert status == 200
        assert body["status"] == "verified"
        assert isinstance(body["key_token"], str)
        assert body["key_token"]
        assert body["id"] == started["id"]


class TestResend:
    async def test_resend_is_200_and_sends_a_new_code(self, api: Api):
        """§4: resend is 200 + the verification; a new SMS arrives."""
        started = await api.start("01012300044")
        await api.latest_code("01012300044")
        status, body = await api.call("POST", path(started["id"], "resend"))
        assert status == 200
        assert (body["status"], body["resends_left"], body["attempts_left"]) == ("pending", 2, 3)
        assert len(await sim_messages(api, "01012300044")) == 2


class TestCancel:
    @pytest.mark.parametrize("ending", ["pending", "verified"])
    async def test_cancel_is_200_canceled(self, api: Api, ending):
        """§4: cancel is 200 with status canceled (a live verification, pending or verified)."""
        if ending == "pending":
            started = await api.start("01012300045")
        else:
            started, _ = await verified(api, "01012300045")
        status, body = await api.call("POST", path(started["id"], "cancel"))
        assert (status, body["status"]) == (200, "canceled")
        assert await stored_status(api, started["id"]) == "canceled"

    @pytest.mark.parametrize("ending", ["completed", "canceled", "failed-4301", "failed-4302", "failed-2910",
                                        "expired-session", "expired-result"])
    async def test_cancel_when_terminal_is_409(self, api: Api, clock, ending):
        """§4: cancel is 409 when already terminal, and changes nothing."""
        end, status_now = ENDINGS[ending]
        vid = await end(api, clock, "01012300046")
        before = await api.rt.store.load(vid)
        status, body = await api.call("POST", path(vid, "cancel"))
        assert status == 409
        error = error_of(body)
        assert error["retryable"] is False
        assert await stored_status(api, vid) == status_now
        after = await api.rt.store.load(vid)
        assert after is not None
        assert before is not None
        assert after.version == before.version

    async def test_cancel_unknown_is_404(self, api: Api):
        """§2: cancel of an unknown id is answered as unknown (404, no verification)."""
        status, body = await api.call("POST", path(UNKNOWN_ID, "cancel"))
        assert status == 404
        assert "verification" not in body


class TestResults:
    async def test_result_once_then_completed(self, api: Api):
        """§4: POST /v1/results is 200 {result: {name, birth, gender_digit, phone, carrier, is_mvno,
        channel, verified_at}} once; the verification becomes completed."""
        started, done = await verified(api, "01012300047")
        status, body = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert status == 200
        assert set(body) == {"result"}
        result = body["result"]
        assert set(result) == RESULT_FIELDS
        assert result == result | {"name": "홍길동", "birth": "19900101", "gender_digit": "1",
                                   "phone": "01012300047", "carrier": "SKT", "is_mvno": False, "channel": "sms"}
        parse_time(result["verified_at"])
        assert await stored_status(api, started["id"]) == "completed"

    async def test_second_use_is_409_4000(self, api: Api):
        """§4: 409 4000 on any second use of the key_token."""
        _, done = await verified(api, "01012300048")
        first = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert first[0] == 200
        for _ in range(2):
            status, body = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
            assert answer(status, body) == (409, "4000", False)

    async def test_after_result_ttl_is_409_4000_even_before_the_timer(self, api: Api, clock):
        """§4: 409 4000 after result_ttl_s (the deadline holds whether or not the timer ran)."""
        started, done = await verified(api, "01012300049")
        clock.advance(RESULT_TTL_S)
        status, body = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert answer(status, body) == (409, "4000", False)
        assert await stored_status(api, started["id"]) == "expired"

    async def test_just_before_result_ttl_is_200(self, api: Api, clock):
        """§4: the key_token is redeemable within result_ttl_s of success."""
        _, done = await verified(api, "01012300050")
        clock.advance(RESULT_TTL_S - 1)
        status, _ = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert status == 200

    @pytest.mark.parametrize("token", ["garbage", "0" * 64, UNKNOWN_ID])
    async def test_unknown_token_is_409_4000(self, api: Api, token):
        """§4: a token that redeems nothing is 409 4000."""
        status, body = await api.call("POST", "/v1/results", {"key_token": token})
        assert answer(status, body) == (409, "4000", False)

    async def test_a_tampered_token_is_409_4000(self, api: Api):
        """§4: a token differing from the issued one is not redeemed (and the real one still works)."""
        _, done = await verified(api, "01012300051")
        token = done["key_token"]
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        status, body = await api.call("POST", "/v1/results", {"key_token": tampered})
        assert answer(status, body) == (409, "4000", False)
        status, _ = await api.call("POST", "/v1/results", {"key_token": token})
        assert status == 200


# ----------------------------------------------------------------------------- §4 timers and callbacks


class TestTimers:
    async def test_session_expires_by_timer_without_a_read(self, api: Api, clock):
        """§4 Timers: when session_ttl_s passes the verification becomes expired by itself."""
        started = await api.start("01012300052")
        clock.advance(SESSION_TTL_S - 1)
        assert await api.rt.timers.run_once() == 0
        assert await stored_status(api, started["id"]) == "pending"
        clock.advance(1)
        assert await api.rt.timers.run_once() == 1
        assert await stored_status(api, started["id"]) == "expired"
        _, read = await api.call("GET", path(started["id"]))
        assert read["status"] == "expired"

    async def test_a_read_after_the_deadline_sees_expired(self, api: Api, clock):
        """§4 Timers: past session_ttl_s the verification is expired even if the timer has not run."""
        started = await api.start("01012300053")
        code = await api.latest_code("01012300053")
        clock.advance(SESSION_TTL_S)
        status, body = await confirm(api, started["id"], code)
        assert (status, error_of(body)["code"]) == (404, "4018")
        _, read = await api.call("GET", path(started["id"]))
        assert read["status"] == "expired"

    async def test_expiry_fires_the_client_callback(self, api: Api, clock, hook):
        """§4 Timers: on expiry the client callback fires, signed, with the expired verification."""
        started = await api.start("01012300054", callback_url=hook.url)
        await deliver(api)
        assert hook.received == []
        await expire_session(api, clock)
        await deliver(api)
        assert hook.statuses() == ["expired"]
        event = hook.events()[0]
        assert event["type"] == "verification.updated"
        assert event["event_id"]
        assert event["verification"]["id"] == started["id"]


class TestClientCallbacks:
    @pytest.mark.parametrize(("ending", "statuses"), [
        ("completed", ["verified", "completed"]),
        ("canceled", ["canceled"]),
        ("canceled-verified", ["verified", "canceled"]),
        ("failed-4301", ["failed"]),
        ("failed-4302", ["failed"]),
        ("expired-result", ["verified", "expired"]),
    ])
    async def test_callback_on_verified_and_every_terminal_status(self, api: Api, clock, hook, ending, statuses):
        """§4: when a verification reaches a terminal status or verified, the callback_url gets a POST."""
        end, _ = ENDINGS[ending]
        vid = await end(api, clock, "01012300055", callback_url=hook.url)
        await deliver(api)
        assert hook.statuses() == statuses
        events = hook.events()
        assert {event["type"] for event in events} == {"verification.updated"}
        assert {event["verification"]["id"] for event in events} == {vid}
        assert len({event["event_id"] for event in events}) == len(events)

    async def test_no_callback_while_pending(self, api: Api, hook):
        """§4: nothing is posted for changes that leave the verification pending (4013, resend)."""
        started = await api.start("01012300056", callback_url=hook.url)
        await wrong_code(api, started["id"])
        await api.call("POST", path(started["id"], "resend"))
        await deliver(api)
        assert hook.received == []

    async def test_callback_on_failure_at_start(self, api: Api, hook):
        """§4: a verification failed at start (2910) with a callback_url reaches a terminal status."""
        status, _ = await api.call("POST", "/v1/verifications", start_body("01000002910", callback_url=hook.url))
        assert status == 422
        await deliver(api)
        assert hook.statuses() == ["failed"]

    async def test_verified_callback_carries_the_key_token(self, api: Api, hook):
        """§4 + §3: the verification in the verified callback has its key_token."""
        _, done = await verified(api, "01012300057", callback_url=hook.url)
        await deliver(api)
        assert hook.events()[0]["verification"]["key_token"] == done["key_token"]

    async def test_callback_retried_until_2xx(self, api: Api, hook):
        """§4: the callback is retried with back-off until a 2xx."""
        api.rt.dispatcher.settings = replace(api.rt.settings, outbox_retry_idle_ms=20)
        hook.replies.extend([500, 503])
        started = await api.start("01012300058", callback_url=hook.url)
        await api.call("POST", path(started["id"], "cancel"))
        await deliver(api)
        for _ in range(100):
            if len(hook.received) >= 3:
                break
            await asyncio.sleep(0.03)
            await api.rt.dispatcher.recover_once()
        assert len(hook.received) == 3
        assert {event["event_id"] for event in hook.events()} == {hook.events()[0]["event_id"]}
        for _ in range(5):
            await api.rt.dispatcher.recover_once()
        assert len(hook.received) == 3, "no delivery after the 2xx"


# ----------------------------------------------------------------------------- §5 the simulator


class TestSimulatorSms:
    async def test_sim_sms_shape_oldest_first(self, api: Api):
        """§5: GET /sim/sms?phone= answers {messages: [{text, code, sent_at}]}, oldest first."""
        started = await api.start("01012300059")
        first = await api.latest_code("01012300059")
        await api.call("POST", path(started["id"], "resend"))
        second = await api.latest_code("01012300059", count=2)
        status, body = await api.call("GET", "/sim/sms?phone=01012300059", key=None)
        assert status == 200
        assert set(body) == {"messages"}
        messages = body["messages"]
        assert [m["code"] for m in messages] == [first, second]
        for message in messages:
            assert set(message) == {"text", "code", "sent_at"}
            assert message["code"] in message["text"]
            parse_time(message["sent_at"])
        status, done = await confirm(api, started["id"], messages[-1]["code"])
        assert (status, done["status"]) == (200, "verified")

    async def test_sim_sms_for_a_phone_without_messages(self, api: Api):
        """§5: a phone that received nothing has an empty list."""
        status, body = await api.call("GET", "/sim/sms?phone=01099998888", key=None)
        assert (status, body) == (200, {"messages": []})

    @pytest.mark.parametrize(("phone", "code"), [
        ("01000002910", "2910"), ("010-0000-2910", "2910"), ("01100002910", "2910"),
        ("01000004016", "4016"), ("010-1234-4016", "4016"),
    ])
    async def test_carrier_refusal_at_start(self, api: Api, phone, code):
        """§5: the last 4 digits = an SMS code refused at start: 422 with that code, failed, no SMS."""
        status, body = await api.call("POST", "/v1/verifications", start_body(phone))
        assert answer(status, body) == (422, code, False)
        verification = body["verification"]
        assert (verification["status"], verification["last_code"]) == ("failed", code)
        assert await outbox_entries(api) == 0
        assert await sim_messages(api, phone.replace("-", "")) == []
        assert await stored_status(api, verification["id"]) == "failed"
        status, read = await api.call("GET", path(verification["id"]))
        assert (status, read["status"], read["last_code"]) == (200, "failed", code)

    @pytest.mark.parametrize("code", ["4022", "4023"])
    async def test_addon_check_at_confirm_is_recoverable(self, api: Api, code):
        """§5 + §4: 4022/4023 at confirm are recoverable: 422, retryable, still pending, no attempt spent."""
        phone = f"0109999{code}"
        started = await api.start(phone)
        otp = await api.latest_code(phone)
        for _ in range(4):
            status, body = await confirm(api, started["id"], otp)
            assert answer(status, body) == (422, code, True)
            verification = body["verification"]
            assert (verification["status"], verification["last_code"]) == ("pending", code)
            assert verification["attempts_left"] == 3
            assert "key_token" not in verification

    @pytest.mark.parametrize("phone", ["01000004611", "01067016030", "01000006706", "01012345678"])
    async def test_codes_of_other_channels_are_healthy_for_sms(self, api: Api, phone):
        """§5: a number whose magic code is not an SMS-channel code behaves like a healthy subscriber."""
        started = await api.start(phone)
        code = await api.latest_code(phone)
        status, body = await confirm(api, started["id"], code)
        assert (status, body["status"]) == (200, "verified")


# ----------------------------------------------------------------------------- §6 signatures


class TestCallbackSignature:
    async def test_callback_signed_with_the_clients_api_key(self, api: Api, hook):
        """§6: callbacks carry X-Veriflow-Signature t=<unix s>,v1=HMAC-SHA256(api key, "<t>." + body)."""
        await verified(api, "01012300060", callback_url=hook.url)
        await deliver(api)
        assert len(hook.received) == 1
        headers, body = hook.received[0]
        header = {k.lower(): v for k, v in headers.items()}.get("x-veriflow-signature")
        assert contract_signature_ok(API_KEY, body, header, time.time())
        assert not contract_signature_ok(OTHER_KEY, body, header, time.time())
        assert not contract_signature_ok(API_KEY, body + b" ", header, time.time())

    async def test_each_client_signs_with_its_own_key(self, api: Api, hook):
        """§4/§6: the secret is the API key of the client that owns the verification."""
        status, started = await api.call("POST", "/v1/verifications",
                                         start_body("01012300061", callback_url=hook.url), key=OTHER_KEY)
        assert status == 201
        await api.call("POST", path(started["id"], "cancel"), key=OTHER_KEY)
        await deliver(api)
        headers, body = hook.received[0]
        header = {k.lower(): v for k, v in headers.items()}.get("x-veriflow-signature")
        assert contract_signature_ok(OTHER_KEY, body, header, time.time())
        assert not contract_signature_ok(API_KEY, body, header, time.time())

    async def test_callback_body_shape(self, api: Api, hook):
        """§4: the callback body is {event_id, type: verification.updated, verification}."""
        started = await api.start("01012300062", callback_url=hook.url)
        _, canceled = await api.call("POST", path(started["id"], "cancel"))
        await deliver(api)
        event = hook.events()[0]
        assert set(event) >= {"event_id", "type", "verification"}
        assert event["type"] == "verification.updated"
        assert set(event["verification"]) >= OBJECT_FIELDS
        assert event["verification"]["status"] == "canceled"
        assert event["verification"]["id"] == canceled["id"]


PROVIDER_SECRET = "test-provider-secret"  # the conftest runtime's VERIFLOW_PROVIDER_SECRET


class TestProviderWebhookSignature:
    """§4/§6/§7: the provider webhook route is common to every channel; SMS needs none of its events,
    but an unsigned or badly signed request must be refused and a signed unknown reference is a no-op."""

    async def post_event(self, api: Api, event: dict[str, Any], signature: str | None) -> tuple[int, Any]:
        raw = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Veriflow-Signature"] = signature
        async with api.session.post(api.base + "/v1/providers/simulator/events", data=raw,
                                    headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    @pytest.mark.parametrize("signature", ["none", "garbage", "wrong-secret", "stale", "future"])
    async def test_bad_signature_is_401(self, api: Api, signature):
        """§6: a signature older than 300 s, more than 300 s ahead, or not matching is 401 (and no key needed)."""
        started = await api.start("01012300063")
        event = {"event_id": "e-1", "type": "sms.result", "reference": started["id"], "code": "2000"}
        raw = json.dumps(event).encode()
        now = int(time.time())  # providers sign with their own (wall) clock, not the service's
        header = {
            "none": None,
            "garbage": "t=abc,v1=zz",
            "wrong-secret": provider_signature("not-the-secret", raw, now),
            "stale": provider_signature(PROVIDER_SECRET, raw, now - 301),
            "future": provider_signature(PROVIDER_SECRET, raw, now + 301),
        }[signature]
        status, _ = await self.post_event(api, event, header)
        assert status == 401
        _, read = await api.call("GET", path(started["id"]))
        assert read == started

    async def test_signed_event_for_an_unknown_reference_is_a_200_no_op(self, api: Api):
        """§7: a validly signed event for an unknown verification, or a replayed event_id, is 200 and changes nothing."""
        event = {"event_id": "e-2", "type": "ars.result", "reference": UNKNOWN_ID, "code": "2000"}
        raw = json.dumps(event).encode()
        now = int(api.rt.clock.now_ms() / 1000)
        for _ in range(2):
            status, _ = await self.post_event(api, event, provider_signature(PROVIDER_SECRET, raw, now))
            assert status == 200
        assert await record_count(api) == 0


# ----------------------------------------------------------------------------- §7 answers at the edges


class TestCaps:
    async def test_three_wrong_codes(self, api: Api):
        """§7: 1st and 2nd wrong codes are 422 4013 (attempts_left 2, then 1); the 3rd is 429 4301, failed."""
        started = await api.start("01012300064")
        code = await api.latest_code("01012300064")
        seen = []
        for _ in range(3):
            status, body = await wrong_code(api, started["id"], code)
            seen.append((*answer(status, body), body["verification"]["attempts_left"],
                         body["verification"]["status"]))
        assert seen == [(422, "4013", True, 2, "pending"), (422, "4013", True, 1, "pending"),
                        (429, "4301", False, 0, "failed")]
        _, read = await api.call("GET", path(started["id"]))
        assert (read["status"], read["last_code"]) == ("failed", "4301")

    async def test_right_code_after_two_wrong_ones_verifies(self, api: Api):
        """§7: the cap is the 3rd *wrong* code; a right one before it succeeds."""
        started = await api.start("01012300065")
        code = await api.latest_code("01012300065")
        for _ in range(2):
            await wrong_code(api, started["id"], code)
        status, body = await confirm(api, started["id"], code)
        assert (status, body["status"]) == (200, "verified")

    async def test_three_resends_then_4302(self, api: Api):
        """§7: three resends succeed and the 4th request ends it: 429 4302, failed."""
        started = await api.start("01012300066")
        await api.latest_code("01012300066")
        left = []
        for count in (2, 3, 4):
            status, body = await api.call("POST", path(started["id"], "resend"))
            assert status == 200
            left.append(body["resends_left"])
            await api.latest_code("01012300066", count=count)
        assert left == [2, 1, 0]
        status, body = await api.call("POST", path(started["id"], "resend"))
        assert answer(status, body) == (429, "4302", False)
        assert body["verification"]["status"] == "failed"
        assert len(await sim_messages(api, "01012300066")) == 4

    async def test_only_the_newest_code_is_accepted(self, api: Api):
        """§7: a resend replaces the code: only the newest code is accepted."""
        started = await api.start("01012300067")
        codes = [await api.latest_code("01012300067")]
        for count in (2, 3):
            await api.call("POST", path(started["id"], "resend"))
            codes.append(await api.latest_code("01012300067", count=count))
        newest = codes[-1]
        stale = [c for c in codes[:-1] if c != newest]
        for code in stale[:2]:
            status, body = await confirm(api, started["id"], code)
            assert answer(status, body) == (422, "4013", True)
        status, body = await confirm(api, started["id"], newest)
        assert (status, body["status"]) == (200, "verified")


async def load(api: Api, vid: str) -> Any:
    return None if vid in {UNKNOWN_ID, MALFORMED_ID} else await api.rt.store.load(vid)


async def to_state(api: Api, clock: Any, name: str, phone: str) -> tuple[str, str]:
    """Bring a verification into `name`; answer its id and the newest code sent."""
    if name == "unknown":
        return UNKNOWN_ID, "123456"
    if name == "malformed":
        return MALFORMED_ID, "123456"
    if name == "verified":
        started, _ = await verified(api, phone)
        return started["id"], await api.latest_code(phone)
    end, _ = ENDINGS[name]
    vid = await end(api, clock, phone)
    messages = await sim_messages(api, phone)
    return vid, messages[-1]["code"] if messages else "123456"


NOT_PENDING = [
    # status now          confirm                resend
    ("verified", (409, "4018"), (409, "4150")),
    ("completed", (409, "4150"), (409, "4150")),
    ("failed-4301", (429, "4301"), (429, "4301")),
    ("failed-4302", (429, "4302"), (429, "4302")),
    ("failed-2910", (422, "2910"), (422, "2910")),
    ("expired-session", (404, "4018"), (404, "4003")),
    ("expired-result", (404, "4018"), (404, "4003")),
    ("canceled", (404, "4018"), (404, "4003")),
    ("canceled-verified", (404, "4018"), (404, "4003")),
    ("unknown", (404, "4018"), (404, "4003")),
    ("malformed", (404, "4018"), (404, "4003")),
]


class TestNoLongerPending:
    @pytest.mark.parametrize(("state", "on_confirm", "on_resend"), NOT_PENDING)
    @pytest.mark.parametrize("code_kind", ["newest", "wrong"])
    async def test_confirm(self, api: Api, clock, state, on_confirm, on_resend, code_kind):
        """§7 table, confirm (SMS) column: verified 409 4018, completed 409 4150, failed its own code,
        expired/canceled/unknown 404 4018 — whatever the code; nothing changes."""
        vid, newest = await to_state(api, clock, state, "01012300068")
        before = await load(api, vid)
        code = newest if code_kind == "newest" else ("000000" if newest != "000000" else "111111")
        status, body = await confirm(api, vid, code)
        assert (status, error_of(body)["code"]) == on_confirm
        assert error_of(body)["retryable"] is False
        after = await load(api, vid)
        if before is not None:
            assert after is not None
            assert (after.version, after.status, after.attempts_left) == (
                before.version, before.status, before.attempts_left)

    @pytest.mark.parametrize(("state", "on_confirm", "on_resend"), NOT_PENDING)
    async def test_resend(self, api: Api, clock, state, on_confirm, on_resend):
        """§7 table, resend column: verified 409 4150, completed 409 4150, failed its own code,
        expired/canceled/unknown 404 4003; no SMS is sent; nothing changes."""
        vid, _ = await to_state(api, clock, state, "01012300069")
        before = await load(api, vid)
        sent = len(await sim_messages(api, "01012300069"))
        status, body = await api.call("POST", path(vid, "resend"))
        assert (status, error_of(body)["code"]) == on_resend
        assert error_of(body)["retryable"] is False
        assert len(await sim_messages(api, "01012300069")) == sent
        after = await load(api, vid)
        if before is not None:
            assert after is not None
            assert (after.version, after.status, after.resends_left) == (
                before.version, before.status, before.resends_left)

    async def test_a_failed_verification_answers_with_its_verification(self, api: Api):
        """§7 + §2: 'the code that ended it' comes with the verification as it now stands."""
        started = await failed_by_attempts(api, "01012300070")
        status, body = await api.call("POST", path(started["id"], "resend"))
        assert (status, body["verification"]["status"], body["verification"]["last_code"]) == (
            429, "failed", "4301")


PRIVATE_HOSTS = ["127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                 "[::1]", "[fe80::1]", "[fd00::1]", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]"]  # noqa: S104


class TestPrivateCallbacks:
    @pytest.mark.parametrize("host", PRIVATE_HOSTS)
    @pytest.mark.settings(allow_private_callbacks=False)
    async def test_private_callback_refused_at_start(self, api: Api, host):
        """§7: a callback_url on a loopback, private or link-local address is 400 3001 at start."""
        status, body = await api.call("POST", "/v1/verifications",
                                      start_body("01012300071", callback_url=f"http://{host}:8080/hook"))
        assert answer(status, body) == (400, "3001", False)
        assert await record_count(api) == 0
        assert await sim_messages(api, "01012300071") == []

    @pytest.mark.parametrize("url", ["https://example.com/hook", "http://93.184.216.34/hook"])
    @pytest.mark.settings(allow_private_callbacks=False)
    async def test_public_callback_accepted(self, api: Api, url):
        """§7: a public callback address is accepted when private networks are not allowed."""
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300072", callback_url=url))
        assert status == 201, body

    @pytest.mark.settings(allow_private_callbacks=True)
    async def test_private_callback_allowed_when_configured(self, api: Api, hook):
        """§7: with callbacks.allow_private_networks true a loopback callback is accepted and called."""
        started = await api.start("01012300073", callback_url=hook.url)
        await api.call("POST", path(started["id"], "cancel"))
        await deliver(api)
        assert hook.statuses() == ["canceled"]


# ----------------------------------------------------------------------------- further edges (§2, §3, §4, §7)


class TestPrivateCallbackNotations:
    @pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "017700000001", "10.1"])
    @pytest.mark.settings(allow_private_callbacks=False)
    async def test_other_notations_of_a_private_address_are_refused_at_start(self, api: Api, host):
        """§7: a callback_url whose host is a loopback/private address is refused at start (400 3001),
        whatever notation of the address is used."""
        status, body = await api.call("POST", "/v1/verifications",
                                      start_body("01012300074", callback_url=f"http://{host}:8080/hook"))
        assert (status, error_of(body)["code"]) == (400, "3001")
        assert await record_count(api) == 0


class TestEveryErrorHasTheEnvelope:
    @pytest.mark.parametrize(("method", "route"), [
        ("DELETE", path(UNKNOWN_ID)),
        ("GET", "/v1/results"),
        ("PUT", "/v1/verifications"),
        ("GET", path(UNKNOWN_ID, "confirm")),
    ])
    async def test_method_not_allowed_has_the_envelope(self, api: Api, method, route):
        """§2: every error is HTTP 4xx/5xx with the JSON error envelope."""
        async with api.session.request(method, api.base + route,
                                       headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert 400 <= resp.status < 600
            raw = await resp.read()
        body = json.loads(raw)
        error_of(body)

    async def test_oversized_body_has_the_envelope_and_creates_nothing(self, api: Api):
        """§2: every error is HTTP 4xx/5xx with the JSON error envelope (here an oversized start body)."""
        body = start_body("01012300075", service_name="x" * 200_000)
        async with api.session.post(api.base + "/v1/verifications", json=body,
                                    headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert 400 <= resp.status < 500
            raw = await resp.read()
        error_of(json.loads(raw))
        assert await record_count(api) == 0

    async def test_json_out_in_utf8(self, api: Api):
        """§2: JSON out, UTF-8 (success and error answers)."""
        started = await api.start("01012300076")
        for method, route, body in (("GET", path(started["id"]), None),
                                    ("POST", path(started["id"], "confirm"), {"code": "000000"})):
            async with api.session.request(method, api.base + route, json=body,
                                           headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.content_type == "application/json"
                assert resp.charset in {None, "utf-8"}
                json.loads((await resp.read()).decode("utf-8"))


class TestAcceptLanguageWeights:
    async def test_quality_values_rank_the_languages(self, api: Api):
        """§2: message is in the locale the Accept-Language header requests (its q-weights rank them)."""
        _, catalog = await api.call("GET", "/v1/catalog", key=None)
        entry = next(e for e in catalog["codes"] if e["code"] == "4001")
        status, body = await api.call("GET", path(UNKNOWN_ID), headers={"Accept-Language": "en;q=0.1, ko;q=0.9"})
        assert status == 404
        assert error_of(body)["message"] == entry["messages"]["ko"]


class TestDeadlineWithoutTheTimer:
    async def test_tx_id_is_free_once_the_session_deadline_passed(self, api: Api, clock):
        """§4: 4007 only for a *live* verification; past session_ttl_s it is expired (a timer, not only on read)."""
        await api.start("01012300077", tx_id="late-77")
        clock.advance(SESSION_TTL_S)
        status, body = await api.call("POST", "/v1/verifications", start_body("01012300077", tx_id="late-77"))
        assert status == 201, body

    async def test_cancel_after_the_deadline_is_409(self, api: Api, clock):
        """§4: cancel is 409 when already terminal, also when the deadline passed before the timer ran."""
        started = await api.start("01012300078")
        clock.advance(SESSION_TTL_S)
        status, body = await api.call("POST", path(started["id"], "cancel"))
        assert status == 409
        assert error_of(body)["retryable"] is False
        assert await stored_status(api, started["id"]) == "expired"


class TestNoPersonalDataLeftBehind:
    @staticmethod
    async def stored_bytes(api: Api) -> bytes:
        redis = api.rt.store.redis
        blob = b""
        for key in await redis.keys("*"):
            name = key if isinstance(key, bytes) else str(key).encode()
            if b"sim" in name:
                continue  # the simulator stands for the carriers, not for the service
            kind = await redis.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "string":
                blob += await redis.get(key) or b""
            elif kind == "hash":
                blob += b"".join((await redis.hgetall(key)).values())
            elif kind == "stream":
                for _, fields in await redis.xrange(key):
                    blob += b"".join(fields.values())
            elif kind == "zset":
                blob += b"".join(member for member, _ in await redis.zrange(key, 0, -1, withscores=True))
        return blob

    async def test_nothing_stored_holds_the_subject_after_it_ends(self, api: Api):
        """§3: personal data (the subject) is deleted when the verification ends."""
        _, done = await verified(api, "01012300079")
        status, _ = await api.call("POST", "/v1/results", {"key_token": done["key_token"]})
        assert status == 200
        blob = await self.stored_bytes(api)
        assert "홍길동".encode() not in blob
        assert b"01012300079" not in blob

    async def test_nothing_stored_holds_the_subject_after_an_idempotent_redeem(self, api: Api):
        """§3: personal data is deleted when the verification ends — also when results was called with
        an Idempotency-Key (the replay cache must not keep the subject)."""
        _, done = await verified(api, "01012300080")
        status, _ = await api.call("POST", "/v1/results", {"key_token": done["key_token"]},
                                   headers={"Idempotency-Key": "redeem-80"})
        assert status == 200
        blob = await self.stored_bytes(api)
        assert "홍길동".encode() not in blob
        assert b"01012300080" not in blob


class TestIdempotencyIsPerClient:
    async def test_the_same_key_from_two_clients_does_not_share_answers(self, api: Api):
        """§2: a client sees only its own verifications, so another client's Idempotency-Key is its own."""
        headers = {"Idempotency-Key": "shared-key-81"}
        mine = await api.call("POST", "/v1/verifications", start_body("01012300081"), headers=headers)
        theirs = await api.call("POST", "/v1/verifications", start_body("01012300081"), headers=headers,
                                key=OTHER_KEY)
        assert (mine[0], theirs[0]) == (201, 201)
        assert mine[1]["id"] != theirs[1]["id"]
        status, _ = await api.call("GET", path(theirs[1]["id"]))
        assert status == 404
