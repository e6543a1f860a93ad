"""The attacks of the hardening issue, replayed through the real server (fakeredis and a real
redis-server): each is refused, and the store is left as it was.

- 50 SMS for one phone in a burst;
- callback URLs aimed inward (circled, full-width, ideographic digits and dots, IPv4 embedded in
  IPv6, ...), at start and at delivery, with a real listener on loopback that must hear nothing;
- digits that are not ASCII digits, and a trailing newline;
- the idempotency record read from Redis alone, to confirm a guessed person;
- the mOTP secret read again after enrolment.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from ipaddress import ip_address
from typing import Any

import orjson
import pyotp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.api import idempotency as held_keys
from service.clock import ManualClock
from service.effects.callback_address import is_public
from service.limits import LimitSettings
from tests.conftest import API_KEY, Api, free_port, start_body
from tests.phone import sim_items
from tests.phone import start as start_channel
from tests.test_callback_address import DISGUISED_PRIVATE, UNDELIVERABLE

PHONE = "01066667777"


async def snapshot(api: Api) -> dict[bytes, Any]:
    """Every key of the store with its value (the simulator's own state aside)."""
    redis = api.rt.store.redis
    found: dict[bytes, Any] = {}
    async for key in redis.scan_iter("*"):
        if b"sim" in key:
            continue
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            found[key] = await redis.get(key)
        elif kind == "hash":
            found[key] = await redis.hgetall(key)
        elif kind == "zset":
            found[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            found[key] = await redis.xrange(key)
        elif kind == "set":
            found[key] = await redis.smembers(key)
        elif kind == "list":
            found[key] = await redis.lrange(key, 0, -1)
    return found


async def records(api: Api) -> int:
    return len([key async for key in api.rt.store.redis.scan_iter("vf:{*}:v:*")])


async def listener() -> tuple[TestServer, list[str]]:
    """A callback endpoint on loopback that records every request it hears."""
    heard: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        heard.append(request.path + " " + (await request.read()).decode(errors="replace"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    return server, heard


class TestSmsPumping:
    async def test_50_sms_for_one_phone_in_a_burst(self, api: Api):
        """Then: 50 created, 50 SMS sent. Now: 5 created and sent (the default per-phone limit),
        45 answered 429 3006 with Retry-After, which created, sent and counted nothing."""
        async def start() -> tuple[int, Any, str | None]:
            async with api.session.post(api.base + "/v1/verifications", json=start_body(PHONE),
                                        headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                return resp.status, await resp.json(content_type=None), resp.headers.get("Retry-After")

        answers = await asyncio.gather(*(start() for _ in range(50)))
        assert sorted(status for status, _, _ in answers) == [201] * 5 + [429] * 45
        refused = [(body, retry) for status, body, retry in answers if status == 429]
        assert {body["error"]["code"] for body, _ in refused} == {"3006"}
        assert all(retry is not None and 1 <= int(retry) <= 600 for _, retry in refused)
        assert await records(api) == 5
        assert len(await api.inbox(PHONE)) == 5
        before = await snapshot(api)
        for extra in ({}, {"tx_id": "order-51", "callback_url": "https://example.com/hook", "end_user_ip": "192.0.2.1"}):
            status, body = await api.call("POST", "/v1/verifications", start_body(PHONE, **extra),
                                          headers={"Idempotency-Key": "burst-51"})
            assert (status, body["error"]["code"]) == (429, "3006")
            assert await snapshot(api) == before, "a refused start changes nothing in the store"


@pytest.mark.settings(allow_private_callbacks=False)  # the production rule
class TestCallbacksAimedInward:
    @pytest.mark.parametrize("url", [url for url, _ in DISGUISED_PRIVATE])
    async def test_a_disguised_private_callback_is_refused_at_start(self, api: Api, url: str):
        """Every disguise of a loopback, private, link-local or metadata address: 400 3001, nothing
        created (the host is judged as the HTTP client would connect to it)."""
        before = await snapshot(api)
        status, body = await api.call("POST", "/v1/verifications", start_body(PHONE, callback_url=url))
        assert (status, body["error"]["code"]) == (400, "3001"), body
        assert await snapshot(api) == before

    @pytest.mark.parametrize("url", [url for url, _ in UNDELIVERABLE])
    async def test_an_undeliverable_callback_is_refused_at_start(self, api: Api, url: str):
        """A URL the HTTP client cannot call as written (userinfo, ambiguous hosts, ...): 3001."""
        before = await snapshot(api)
        status, body = await api.call("POST", "/v1/verifications", start_body(PHONE, callback_url=url))
        assert (status, body["error"]["code"]) == (400, "3001"), body
        assert await snapshot(api) == before

    async def test_a_public_callback_is_kept_normalised(self, api: Api):
        """The URL kept is the one the client will call."""
        started = await api.start(PHONE, callback_url="http://\uff18.\uff18.\uff18.\uff18/hook")
        record = await api.rt.store.load(started["id"])
        assert record is not None
        assert record.callback_url == "http://8.8.8.8/hook"

    async def test_a_disguised_callback_kept_in_a_record_is_never_delivered(self, api: Api):
        """A PASS-like verified callback (with a live key_token) whose URL is `http://①②⑦.0.0.1:PORT/x`
        (kept before this rule): the dispatcher drops it at once, the listener hears nothing."""
        server, heard = await listener()
        try:
            started = await api.start(PHONE)
            redis = api.rt.store.redis
            record_key = api.rt.store.keys.record(started["id"])
            await redis.hset(record_key, "callback_url", f"http://①②⑦.0.0.1:{server.port}/x")
            await redis.hincrby(record_key, "version", 1)  # a write of its own, as every commit is
            code = await api.latest_code(PHONE)
            status, verified = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
            assert (status, verified["status"]) == (200, "verified")
            for _ in range(3):
                await api.rt.dispatcher.read_once(block_ms=1)
            await asyncio.sleep(0.1)
            assert heard == []
            assert await api.rt.dispatcher.pending_count() == 0, "dropped at once, not retried for a day"
            dropped = api.rt.metrics.effects.labels("notify", "dropped")._value.get()
            assert dropped == 1
        finally:
            await server.close()

    async def test_a_name_that_resolves_only_to_private_addresses_is_dropped_at_once(self, api: Api):
        """The check on the connection: this machine's own name resolves to a non-public address;
        the callback is dropped at once, and nothing is heard."""
        name = socket.gethostname()
        try:
            answers = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
        except OSError:
            pytest.skip("this machine's name does not resolve")
        if not answers or any(is_public(ip_address(str(a).partition("%")[0])) for a in answers):
            pytest.skip("this machine's name resolves to a public address")
        server, heard = await listener()
        try:
            started = await api.start(PHONE, callback_url=f"http://{name}:{server.port}/x")
            await api.call("POST", f"/v1/verifications/{started['id']}/cancel")
            for _ in range(3):
                await api.rt.dispatcher.read_once(block_ms=1)
            assert heard == []
            assert await api.rt.dispatcher.pending_count() == 0, "dropped at once, not retried for a day"
        finally:
            await server.close()


UNICODE_PHONES = [
    "010\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",  # Arabic-Indic digits
    "010\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # full-width digits
    "\uff10\uff11\uff10-1234-5678",
    "010\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e",  # Devanagari digits
    "01066667777\n",
    "01066667777\r\n",
    "\n01066667777",
]


class TestDigitsThatAreNotDigits:
    @pytest.mark.parametrize("phone", UNICODE_PHONES)
    async def test_a_phone_of_other_digits_is_3001(self, api: Api, phone: str):
        before = await snapshot(api)
        status, body = await api.call("POST", "/v1/verifications", start_body(phone))
        assert (status, body["error"]["code"]) == (400, "3001")
        assert await snapshot(api) == before

    @pytest.mark.parametrize(("field", "value"), [
        ("birth", "\u0661\u0669\u0669\u0660\u0660\u0661\u0660\u0661"),
        ("birth", "\uff11\uff19\uff19\uff10\uff10\uff11\uff10\uff11"),
        ("birth", "19900101\n"),
        ("gender_digit", "\u0661"),
        ("gender_digit", "\uff11"),
        ("gender_digit", "1\n"),
    ])
    async def test_a_birth_or_gender_digit_of_other_digits_is_3001(self, api: Api, field: str, value: str):
        body = start_body(PHONE)
        body["subject"][field] = value
        before = await snapshot(api)
        status, answer = await api.call("POST", "/v1/verifications", body)
        assert (status, answer["error"]["code"]) == (400, "3001")
        assert await snapshot(api) == before

    async def test_a_code_of_other_digits_is_3001_and_spends_no_attempt(self, api: Api):
        started = await api.start(PHONE)
        code = await api.latest_code(PHONE)
        before = await snapshot(api)
        for disguised in ("".join(chr(0xFF10 + int(d)) for d in code),
                          "".join(chr(0x0660 + int(d)) for d in code), code + "\n"):
            status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": disguised})
            assert (status, body["error"]["code"]) == (400, "3001")
        assert await snapshot(api) == before
        status, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert read["attempts_left"] == 3
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        assert (status, body["status"]) == (200, "verified")

    async def test_mOTP_enrolment_and_code_take_ascii_digits_only(self, api: Api):  # noqa: N802
        status, body = await api.call("POST", "/v1/motp/users",
                                      {"user_id": "u1", "name": "홍길동", "phone": UNICODE_PHONES[1]})
        assert (status, body["error"]["code"]) == (400, "3001")
        status, body = await api.call("POST", "/v1/motp/users", {"user_id": "u1", "name": "홍길동", "phone": PHONE})
        assert status == 201
        app = pyotp.parse_uri(body["otpauth_uri"])
        status, started = await api.call("POST", "/v1/verifications", {
            "channel": "motp", "motp_user_id": "u1", "subject": {"name": "홍길동", "phone": PHONE}})
        assert status == 201
        clock = api.rt.clock
        assert isinstance(clock, ManualClock)
        code = str(app.at(clock.now_ms() // 1000))
        before = await snapshot(api)
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                      {"code": "".join(chr(0xFF10 + int(d)) for d in code)})
        assert (status, body["error"]["code"]) == (400, "3001")
        assert await snapshot(api) == before, "no failure counted on the user"
        status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": code})
        assert (status, body["status"]) == (200, "verified")


    async def test_ars_keypad_digits_of_other_scripts_are_wrong_digits(self, api: Api):
        """The simulator's keypad: the display code in full-width digits is 4602, not a success."""
        phone = "01024680000"
        status, started = await start_channel(api, "ars", phone)
        assert status == 201
        assert (await sim_items(api, "ars", phone))[0]["state"] == "ringing"
        disguised = "".join(chr(0xFF10 + int(d)) for d in started["display_code"])
        status, answer = await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": disguised}, key=None)
        assert (status, answer["outcome"]) == (200, "4602")
        status, read = await api.call("GET", f"/v1/verifications/{started['id']}")
        assert (read["status"], read["last_code"]) == ("pending", "4602")


class TestIdempotencyRecord:
    async def test_redis_alone_cannot_confirm_a_guessed_person(self, api: Api):
        """Then: the record kept SHA-256(path, body) for a day, so a guessed name and birth date
        were confirmed, and the phone's last 4 digits found, from Redis alone. Now the fingerprint
        is keyed with the service key: no guess over the whole last-4 space matches, and nothing
        in the store is an unkeyed digest of the body or of any subject field."""
        body = start_body(PHONE)
        raw = orjson.dumps(body)
        headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "k-1", "Content-Type": "application/json"}
        async with api.session.post(api.base + "/v1/verifications", data=raw, headers=headers) as resp:
            assert resp.status == 201
        redis = api.rt.store.redis
        stored = [held_keys.decode(await redis.get(key)) async for key in redis.scan_iter("vf:{idem:*")]
        assert len(stored) == 1
        fingerprint = stored[0].fingerprint

        def unkeyed(phone: str) -> str:
            guess = orjson.dumps({**body, "subject": {**body["subject"], "phone": phone}})
            return hashlib.sha256(b"/v1/verifications\0" + guess).hexdigest()

        assert fingerprint != unkeyed(PHONE)
        assert all(unkeyed(f"0106666{n:04d}") != fingerprint for n in range(10_000))
        dump = repr(await snapshot(api)).encode()
        subject = body["subject"]
        for value in (PHONE, "010-6666-7777", subject["name"], subject["birth"]):
            for digest in (hashlib.sha256(value.encode()).hexdigest(), hashlib.sha256(raw).hexdigest()):
                assert digest.encode() not in dump
                assert digest[:24].encode() not in dump
            assert value.encode() not in dump, "no personal data in plain text"


    async def test_a_verification_id_says_nothing_about_the_phone(self, api: Api):
        """An id shows its shard: it used to be a CRC of the phone (4 of its bits with 16 shards,
        14 with the most). Now a verification without a tx_id lands on a random shard."""
        api.rt.limiter.settings = LimitSettings(per_phone=None)
        shards = {(await api.start(PHONE))["id"][:4] for _ in range(20)}
        assert len(shards) > 1


class TestMotpSecretShownOnce:
    async def test_the_qr_code_cannot_be_read_again(self, api: Api):
        """Then: GET /v1/motp/users/{id}/qr.svg gave the secret to any holder of the client key, at
        any time. Now: the QR code is in the enrolment answer only; the route is gone, reading the
        user shows no secret, and registering again shows a new secret."""
        body = {"user_id": "trainee-1", "name": "홍길동", "phone": PHONE}
        status, first = await api.call("POST", "/v1/motp/users", body)
        assert status == 201
        secret = pyotp.parse_uri(first["otpauth_uri"]).secret
        assert first["qr_svg"].rstrip().endswith("</svg>")
        before = await snapshot(api)
        for path in ("/v1/motp/users/trainee-1/qr.svg", "/v1/motp/users/trainee-1"):
            async with api.session.get(api.base + path, headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                text = await resp.text()
            assert secret not in text
            assert "otpauth" not in text
        status, _ = await api.call("GET", "/v1/motp/users/trainee-1/qr.svg")
        assert status == 404
        assert await snapshot(api) == before
        status, second = await api.call("POST", "/v1/motp/users", body)
        assert status == 201
        assert pyotp.parse_uri(second["otpauth_uri"]).secret != secret
        assert second["qr_svg"] != first["qr_svg"]
