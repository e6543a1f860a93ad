"""mOTP through the real aiohttp server: enrolment, verification, lockout, unlock.

Codes are computed as an authenticator app would, with pyotp from the enrolment's URI, at the
test's manual clock.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pyotp
import pytest
import segno

from service.clock import ManualClock
from service.store.keys import motp_user_key, motp_user_ref
from tests.conftest import OTHER_KEY, Api

NAME, PHONE = "홍길동", "01012345678"


async def enrol(api: Api, user_id: str = "trainee-1", name: str = NAME, phone: str = "010-1234-5678",
                *, key: str | None = None) -> pyotp.TOTP:
    extra = {"key": key} if key else {}
    status, body = await api.call("POST", "/v1/motp/users", {"user_id": user_id, "name": name, "phone": phone},
                                  **extra)
    assert status == 201, body
    assert (body["user_id"], body["status"]) == (user_id, "registered")
    app = pyotp.parse_uri(body["otpauth_uri"])
    assert isinstance(app, pyotp.TOTP)
    return app


def now_code(app: pyotp.TOTP, api: Api, steps: int = 0) -> str:
    clock = api.rt.clock
    assert isinstance(clock, ManualClock)
    return str(app.at(clock.now_ms() // 1000 + steps * 60))


async def start(api: Api, user_id: str = "trainee-1", name: str = NAME, phone: str = PHONE,
                **extra: Any) -> tuple[int, Any]:
    body = {"channel": "motp", "motp_user_id": user_id, "subject": {"name": name, "phone": phone}, **extra}
    return await api.call("POST", "/v1/verifications", body)


async def started(api: Api, user_id: str = "trainee-1") -> str:
    status, body = await start(api, user_id)
    assert status == 201, body
    assert (body["status"], body["state"], body["channel"]) == ("pending", "awaiting_code", "motp")
    return str(body["id"])


async def confirm(api: Api, vid: str, code: str) -> tuple[int, Any]:
    return await api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": code})


async def user(api: Api, user_id: str = "trainee-1") -> tuple[int, Any]:
    return await api.call("GET", f"/v1/motp/users/{user_id}")


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def lock(api: Api, app: pyotp.TOTP, user_id: str = "trainee-1") -> None:
    vid = await started(api, user_id)
    for _ in range(5):
        await confirm(api, vid, wrong(now_code(app, api)))
    assert (await user(api, user_id))[1]["status"] == "locked"


async def sms_token(api: Api, phone: str = PHONE, name: str = NAME) -> str:
    body = {"channel": "sms", "subject": {"name": name, "birth": "19900101", "gender_digit": "1",
                                          "phone": phone, "carrier": "SKT"}}
    status, started_sms = await api.call("POST", "/v1/verifications", body)
    assert status == 201, started_sms
    code = await api.latest_code(phone, count=len(await api.inbox(phone)))
    status, verified = await api.call("POST", f"/v1/verifications/{started_sms['id']}/confirm", {"code": code})
    assert status == 200, verified
    return str(verified["key_token"])


class TestEnrolment:
    async def test_enrol_gives_a_standard_totp_uri_and_a_qr_code(self, api: Api):
        """TOTP, SHA1, 6 digits, period 60, issuer set; the answer's QR code is an SVG of the same
        URI, shown once: no route reads it back afterwards."""
        status, body = await api.call("POST", "/v1/motp/users",
                                      {"user_id": "trainee-1", "name": NAME, "phone": "010-1234-5678"})
        assert status == 201
        assert body["failures"] == 0
        uri = body["otpauth_uri"]
        assert uri.startswith("otpauth://totp/veriflow:trainee-1?")
        assert "algorithm=SHA1" in uri
        app = pyotp.parse_uri(uri)
        assert isinstance(app, pyotp.TOTP)
        assert (app.interval, app.digits, app.issuer, app.name, app.digest().name) == (
            60, 6, "veriflow", "trainee-1", "sha1")
        svg = body["qr_svg"]
        assert svg.lstrip().startswith("<?xml")
        assert svg.rstrip().endswith("</svg>")
        expected = io.BytesIO()
        segno.make(uri, error="m").save(expected, kind="svg", scale=4)  # QR encoding is deterministic
        assert svg.encode() == expected.getvalue(), "the QR code encodes exactly the enrolment's URI"
        async with api.session.get(api.base + "/v1/motp/users/trainee-1/qr.svg",
                                   headers={"Authorization": "Bearer test-key-0001"}) as resp:
            assert resp.status == 404
            assert app.secret not in await resp.text()

    async def test_the_secret_name_and_phone_are_not_stored_in_plain_text(self, api: Api):
        """The user hash holds a sealed secret and keyed hashes only."""
        app = await enrol(api)
        raw = await api.rt.store.redis.hgetall(motp_user_key(api.rt.store.keys, motp_user_ref("acme", "trainee-1")))
        blob = b"".join(k + v for k, v in raw.items())
        assert raw[b"device"] == b"1"
        for secret in (app.secret.encode(), app.byte_secret(), NAME.encode(), PHONE.encode()):
            assert secret not in blob

    async def test_registering_again_replaces_the_device(self, api: Api):
        """Only the newest device works: the old secret's code is a mismatch."""
        old = await enrol(api)
        new = await enrol(api)
        assert old.secret != new.secret
        vid = await started(api)
        status, body = await confirm(api, vid, now_code(old, api))
        assert (status, body["error"]["code"]) == (422, "AP901")
        status, body = await confirm(api, vid, now_code(new, api))
        assert (status, body["status"]) == (200, "verified")

    async def test_read_and_unknown_users(self, api: Api):
        """GET shows status and failures; unknown, or another client's, user is 404 AP005."""
        await enrol(api)
        assert await user(api) == (200, {"user_id": "trainee-1", "status": "registered", "failures": 0})
        status, body = await user(api, "nobody")
        assert (status, body["error"]["code"]) == (404, "AP005")
        status, body = await api.call("GET", "/v1/motp/users/trainee-1", key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (404, "AP005")
        status, _ = await api.call("GET", "/v1/motp/users/nobody/qr.svg")
        assert status == 404

    @pytest.mark.parametrize("body", [{}, {"user_id": "u", "name": "n"}, {"user_id": "u", "name": "n", "phone": "12"},
                                      {"user_id": "", "name": "n", "phone": PHONE}])
    async def test_invalid_enrolment_is_3001(self, api: Api, body):
        """Missing or invalid fields: 400 3001, nothing registered."""
        status, answer = await api.call("POST", "/v1/motp/users", body)
        assert (status, answer["error"]["code"]) == (400, "3001")
        assert (await user(api, "u"))[0] == 404


class TestVerification:
    async def test_verify_then_redeem(self, api: Api):
        """The app's current code verifies; the key token redeems once for name and phone."""
        app = await enrol(api)
        vid = await started(api)
        status, body = await confirm(api, vid, now_code(app, api))
        assert (status, body["status"], body["last_code"]) == (200, "verified", "2000")
        status, again = await confirm(api, vid, now_code(app, api))
        assert (status, again["error"]["code"]) == (409, "4018")
        status, result = await api.call("POST", "/v1/results", {"key_token": body["key_token"]})
        assert status == 200
        assert (result["result"]["name"], result["result"]["phone"], result["result"]["channel"]) == (
            NAME, PHONE, "motp")

    async def test_a_code_is_accepted_once(self, api: Api):
        """The same code on a second verification is a mismatch, and not counted."""
        app = await enrol(api)
        code = now_code(app, api)
        assert (await confirm(api, await started(api), code))[0] == 200
        status, body = await confirm(api, await started(api), code)
        assert (status, body["error"]["code"], body["verification"]["status"]) == (422, "AP901", "pending")
        assert (await user(api))[1]["failures"] == 0

    @pytest.mark.parametrize(("steps", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)])
    async def test_one_step_of_clock_drift_either_side(self, api: Api, steps, accepted):
        """window_steps 1: the previous and next minute's codes verify, two minutes away do not."""
        app = await enrol(api)
        status, _ = await confirm(api, await started(api), now_code(app, api, steps))
        assert status == (200 if accepted else 422)

    @pytest.mark.parametrize(("name", "phone", "user_id", "key"), [
        (NAME, PHONE, "nobody", None), ("김철수", PHONE, "trainee-1", None),
        (NAME, "01099998888", "trainee-1", None), (NAME, PHONE, "trainee-1", OTHER_KEY),
    ])
    async def test_unknown_user_or_other_person_is_ap005(self, api: Api, name, phone, user_id, key):
        """An unknown user, a different name or phone, another client's user: 422 AP005, failed."""
        await enrol(api)
        body = {"channel": "motp", "motp_user_id": user_id, "subject": {"name": name, "phone": phone}}
        status, answer = await api.call("POST", "/v1/verifications", body, key=key or "test-key-0001")
        assert (status, answer["error"]["code"], answer["verification"]["status"]) == (422, "AP005", "failed")

    async def test_name_spacing_and_phone_hyphens_do_not_matter(self, api: Api):
        """The same person written differently is the same person."""
        await enrol(api, name=" 홍 길동 ", phone="010-1234-5678")
        status, body = await start(api, name="홍 길동", phone="01012345678")
        assert status == 201, body

    async def test_invalid_start_is_3001(self, api: Api):
        """motp_user_id and the subject's name and phone are required."""
        for body in ({"channel": "motp", "subject": {"name": NAME, "phone": PHONE}},
                     {"channel": "motp", "motp_user_id": "u", "subject": {"name": NAME}}):
            status, answer = await api.call("POST", "/v1/verifications", body)
            assert (status, answer["error"]["code"]) == (400, "3001")

    async def test_the_session_expires(self, api: Api):
        """After session_ttl_s (420 s) a confirm is 404 4018 and the verification expired 4001."""
        app = await enrol(api)
        vid = await started(api)
        clock = api.rt.clock
        assert isinstance(clock, ManualClock)
        clock.advance(420)
        status, body = await confirm(api, vid, now_code(app, api))
        assert (status, body["error"]["code"]) == (404, "4018")
        status, body = await api.call("GET", f"/v1/verifications/{vid}")
        assert (body["status"], body["last_code"]) == ("expired", "4001")

    async def test_resend_is_400_and_cancel_works(self, api: Api):
        """Nothing to resend (3001); cancel ends the verification."""
        await enrol(api)
        vid = await started(api)
        status, body = await api.call("POST", f"/v1/verifications/{vid}/resend")
        assert (status, body["error"]["code"]) == (400, "3001")
        status, body = await api.call("POST", f"/v1/verifications/{vid}/cancel")
        assert (status, body["status"]) == (200, "canceled")


class TestLockout:
    async def test_five_wrong_codes_lock_the_user(self, api: Api):
        """AP901 x4 (attempts 4..1, retryable), then 423 AP902; locked: start 423 AP902, enrol 423 AP011."""
        app = await enrol(api)
        vid = await started(api)
        seen = []
        for _ in range(5):
            status, body = await confirm(api, vid, wrong(now_code(app, api)))
            seen.append((status, body["error"]["code"], body["error"]["retryable"],
                         body["verification"]["attempts_left"]))
        assert seen == [(422, "AP901", True, 4), (422, "AP901", True, 3), (422, "AP901", True, 2),
                        (422, "AP901", True, 1), (423, "AP902", False, 0)]
        assert await user(api) == (200, {"user_id": "trainee-1", "status": "locked", "failures": 5})
        status, body = await start(api)
        assert (status, body["error"]["code"], body["verification"]["status"]) == (423, "AP902", "failed")
        status, body = await api.call("POST", "/v1/motp/users",
                                      {"user_id": "trainee-1", "name": NAME, "phone": PHONE})
        assert (status, body["error"]["code"]) == (423, "AP011")

    async def test_failures_count_across_verifications_and_a_right_code_resets(self, api: Api):
        """Wrong codes on different verifications add up; a right code sets the count to 0."""
        app = await enrol(api)
        for n in range(1, 4):
            await confirm(api, await started(api), wrong(now_code(app, api)))
            assert (await user(api))[1]["failures"] == n
        assert (await confirm(api, await started(api), now_code(app, api)))[0] == 200
        assert (await user(api))[1]["failures"] == 0

    async def test_a_lock_fails_the_users_other_pending_verifications(self, api: Api):
        """Locked by one verification: the right code on another is 423 AP902."""
        app = await enrol(api)
        other = await started(api)
        await lock(api, app)
        status, body = await confirm(api, other, now_code(app, api))
        assert (status, body["error"]["code"], body["verification"]["status"]) == (423, "AP902", "failed")

    async def test_20_simultaneous_wrong_codes_count_exactly_five(self, api: Api):
        """20 wrong codes at once on 20 verifications of one user: 4 AP901, 16 AP902, 5 failures."""
        app = await enrol(api)
        vids = [await started(api) for _ in range(20)]
        bad = wrong(now_code(app, api))
        answers = await asyncio.gather(*(confirm(api, vid, bad) for vid in vids))
        codes = sorted(body["error"]["code"] for _, body in answers)
        assert codes == ["AP901"] * 4 + ["AP902"] * 16
        assert await user(api) == (200, {"user_id": "trainee-1", "status": "locked", "failures": 5})

    async def test_20_simultaneous_wrong_codes_on_one_verification(self, api: Api):
        """The same on a single verification: the user ends locked with exactly 5 failures."""
        app = await enrol(api)
        vid = await started(api)
        bad = wrong(now_code(app, api))
        answers = await asyncio.gather(*(confirm(api, vid, bad) for _ in range(20)))
        assert sorted(body["error"]["code"] for _, body in answers) == ["AP901"] * 4 + ["AP902"] * 16
        assert await user(api) == (200, {"user_id": "trainee-1", "status": "locked", "failures": 5})

    async def test_simultaneous_right_codes_succeed_once(self, api: Api):
        """One code, 10 verifications at once: one verifies; the others are refused and not counted."""
        app = await enrol(api)
        vids = [await started(api) for _ in range(10)]
        code = now_code(app, api)
        answers = await asyncio.gather(*(confirm(api, vid, code) for vid in vids))
        assert sorted(status for status, _ in answers) == [200] + [422] * 9
        assert (await user(api))[1]["failures"] == 0


class TestUnlock:
    async def test_the_right_person_unlocks_and_the_token_is_spent(self, api: Api):
        """A verified SMS of the same name and phone: registered, 0 failures; the token is spent."""
        app = await enrol(api)
        await lock(api, app)
        token = await sms_token(api)
        status, body = await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": token})
        assert (status, body) == (200, {"user_id": "trainee-1", "status": "registered", "failures": 0})
        status, body = await api.call("POST", "/v1/results", {"key_token": token})
        assert (status, body["error"]["code"]) == (409, "4000")
        status, body = await api.call("GET", f"/v1/verifications/{token.partition('.')[0]}")
        assert body["status"] == "completed"
        assert (await confirm(api, await started(api), now_code(app, api)))[0] == 200

    async def test_a_reused_token_is_4000(self, api: Api):
        """A token that unlocked once is spent: 409 4000 the second time, the user stays locked."""
        app = await enrol(api)
        await lock(api, app)
        token = await sms_token(api)
        assert (await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": token}))[0] == 200
        await lock(api, app)
        status, body = await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": token})
        assert (status, body["error"]["code"]) == (409, "4000")
        assert (await user(api))[1]["status"] == "locked"

    async def test_another_person_is_ap005_and_spends_nothing(self, api: Api):
        """A token of another phone: 422 AP005; the token is still redeemable, the user still locked."""
        app = await enrol(api)
        await lock(api, app)
        token = await sms_token(api, phone="01055556666")
        status, body = await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": token})
        assert (status, body["error"]["code"]) == (422, "AP005")
        assert (await user(api))[1]["status"] == "locked"
        status, body = await api.call("POST", "/v1/results", {"key_token": token})
        assert (status, body["result"]["phone"]) == (200, "01055556666")

    async def test_bad_tokens_are_4000_before_the_person_is_checked(self, api: Api):
        """Unknown, malformed, another client's, mOTP's own, expired: 409 4000 (even for an unknown user)."""
        app = await enrol(api)
        await enrol(api, "trainee-2", key=OTHER_KEY)
        own = await sms_token(api)
        vid = await started(api)
        motp_token = (await confirm(api, vid, now_code(app, api)))[1]["key_token"]
        status, body = await api.call("POST", "/v1/motp/users/trainee-2/unlock", {"key_token": own},
                                      key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (409, "4000")
        for token in ("nope", own.partition(".")[0] + ".forged", motp_token):
            for user_id in ("trainee-1", "nobody"):
                status, body = await api.call("POST", f"/v1/motp/users/{user_id}/unlock", {"key_token": token})
                assert (status, body["error"]["code"]) == (409, "4000")
        clock = api.rt.clock
        assert isinstance(clock, ManualClock)
        clock.advance(600)
        status, body = await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": own})
        assert (status, body["error"]["code"]) == (409, "4000")

    async def test_unknown_user_with_a_good_token_is_404_ap005(self, api: Api):
        """The token is good but there is no such user: 404 AP005, nothing spent."""
        token = await sms_token(api)
        status, body = await api.call("POST", "/v1/motp/users/nobody/unlock", {"key_token": token})
        assert (status, body["error"]["code"]) == (404, "AP005")
        assert (await api.call("POST", "/v1/results", {"key_token": token}))[0] == 200

    async def test_unlock_resets_the_count_of_a_user_not_locked(self, api: Api):
        """Contract 7: the count goes to 0 even when the user was not locked."""
        app = await enrol(api)
        await confirm(api, await started(api), wrong(now_code(app, api)))
        assert (await user(api))[1]["failures"] == 1
        token = await sms_token(api)
        status, body = await api.call("POST", "/v1/motp/users/trainee-1/unlock", {"key_token": token})
        assert (status, body["failures"]) == (200, 0)


async def test_openapi_describes_the_motp_routes(api: Api):
    """Every mOTP route is in the document (it is built from the routes the app has)."""
    status, doc = await api.call("GET", "/openapi.json", key=None)
    assert status == 200
    for path in ("/v1/motp/users", "/v1/motp/users/{user_id}", "/v1/motp/users/{user_id}/unlock"):
        assert path in doc["paths"]
    assert "/v1/motp/users/{user_id}/qr.svg" not in doc["paths"], "the secret is shown once, at enrolment"
    motp_start = doc["components"]["schemas"]["StartBody"]["discriminator"]["mapping"]["motp"]
    assert motp_start == "#/components/schemas/MotpStart"
    assert doc["components"]["schemas"]["MotpStart"]["required"] == ["channel", "motp_user_id", "subject"]


async def test_a_replayed_enrolment_answers_the_same_device_and_stores_no_secret(api: Api):
    """Idempotency-Key: the replay is the first answer (one device), kept sealed in the store."""
    body = {"user_id": "trainee-1", "name": NAME, "phone": PHONE}
    first = await api.call("POST", "/v1/motp/users", body, headers={"Idempotency-Key": "enrol-1"})
    again = await api.call("POST", "/v1/motp/users", body, headers={"Idempotency-Key": "enrol-1"})
    assert first == again
    assert first[0] == 201
    secret = pyotp.parse_uri(first[1]["otpauth_uri"]).secret
    redis = api.rt.store.redis
    stored = [await redis.get(key) async for key in redis.scan_iter("vf:{idem:*")]
    assert len(stored) == 1
    assert secret.encode() not in stored[0]
    raw = await redis.hgetall(motp_user_key(api.rt.store.keys, motp_user_ref("acme", "trainee-1")))
    assert raw[b"device"] == b"1"


async def test_a_live_tx_id_is_4007_and_a_timer_expires_the_session(api: Api):
    """The user's second live verification with the same tx_id is 409 4007; the session timer
    (not only a read) expires it, and the tx_id is free again."""
    await enrol(api)
    status, first = await start(api, tx_id="lesson-1")
    assert status == 201
    status, body = await start(api, tx_id="lesson-1")
    assert (status, body["error"]["code"]) == (409, "4007")
    clock = api.rt.clock
    assert isinstance(clock, ManualClock)
    clock.advance(421)
    assert await api.rt.timers.run_once() >= 1
    record = await api.rt.store.load(first["id"])
    assert record is not None
    assert (record.status.value, record.last_code) == ("expired", "4001")
    assert (await start(api, tx_id="lesson-1"))[0] == 201
