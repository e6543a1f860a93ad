"""How to produce each catalog row and detail code through the running service.

`CASES` maps (code, variant, detail code) to a producer: an async function that drives the real
server (and its simulator) until one answer carries that outcome, and returns that answer's HTTP
status and body. Rows the simulator decides are produced from its magic-number table
(`service.simulator.magic.magic_rows`) by the point where the upstream answers; the others by the
rule that answers them. The final request sends `headers` (the test's Accept-Language).
tests/test_catalog_reachable.py walks config/catalog.yaml over them; tests/test_api_dialects.py
uses them for every row of the Xsolla mapping.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.catalog import Catalog
from service.clock import ManualClock
from service.providers.simulator import SimulatorClient
from service.simulator.magic import (
    ADDON_CHECK,
    CALL,
    KEYPAD,
    PASS_CHECK,
    PUSH,
    SUBSCRIBER_CHECK,
    magic_rows,
)
from tests.conftest import Api, start_body
from tests.phone import sim_items
from tests.test_api_motp import enrol, lock, now_code, started, wrong

Headers = dict[str, str]
Answer = tuple[int, dict[str, Any]]
Producer = Callable[[Api, Headers], Awaitable[Answer]]
Key = tuple[str, str | None, str | None]  # code, variant, detail code

UNKNOWN_ID = "0000ffffffffffffffffffffffff"
_numbers = itertools.count(1)


def plain_phone() -> str:
    """A phone no magic-number rule answers (…5555 and 0000-0999, below every code), a new one for each use."""
    return f"0105555{next(_numbers) % 1000:04d}"


def v(vid: str, action: str = "") -> str:
    return f"/v1/verifications/{vid}" + (f"/{action}" if action else "")


@dataclass(frozen=True, slots=True)
class Case:
    produce: Producer
    status: int | None = None  # the HTTP status, when not the catalog row's
    how: str = ""


CASES: dict[Key, Case] = {}


def case(code: str, detail: str | None = None, *, variant: str | None = None, status: int | None = None,
         how: str = "") -> Callable[[Producer], Producer]:
    def register(fn: Producer) -> Producer:
        CASES[code, variant, detail] = Case(fn, status, how)
        return fn

    return register


# ---- building blocks ----


async def sms_started(api: Api, phone: str | None = None, **extra: Any) -> tuple[str, str]:
    phone = phone or plain_phone()
    status, body = await api.call("POST", "/v1/verifications", start_body(phone, **extra))
    assert status == 201, body
    return str(body["id"]), phone


async def sms_code(api: Api, phone: str) -> str:
    return await api.latest_code(phone, count=len(await api.inbox(phone)))


async def verified_sms(api: Api) -> tuple[str, str]:
    vid, phone = await sms_started(api)
    status, body = await api.call("POST", v(vid, "confirm"), {"code": await sms_code(api, phone)})
    assert status == 200, body
    return vid, str(body["key_token"])


async def channel_started(api: Api, channel: str, phone: str) -> Answer:
    status, body = await api.call("POST", "/v1/verifications", start_body(phone, channel=channel))
    return status, dict(body)


def clock_of(api: Api) -> ManualClock:
    clock = api.rt.clock
    assert isinstance(clock, ManualClock)
    return clock


def simulator_of(api: Api) -> SimulatorClient:
    client = api.rt.providers.carriers
    assert isinstance(client, SimulatorClient)
    return client


# ---- rows the simulator decides, by the point where its upstream answers ----


def at_start(channel: str) -> Callable[[str], Producer]:
    def make(phone: str) -> Producer:
        async def produce(api: Api, headers: Headers) -> Answer:
            status, body = await api.call("POST", "/v1/verifications", start_body(phone, channel=channel),
                                          headers=headers)
            return status, dict(body)

        return produce

    return make


def at_confirm(phone: str) -> Producer:
    """The SMS carrier's checks of the right code, asked at confirm."""

    async def produce(api: Api, headers: Headers) -> Answer:
        vid, _ = await sms_started(api, phone)
        return await api.call("POST", v(vid, "confirm"), {"code": await sms_code(api, phone)}, headers=headers)

    return produce


def reported(channel: str, *, keypad: bool = False) -> Callable[[str], Producer]:
    """The call centre or the PASS app reports; confirm then answers what it reported."""

    def make(phone: str) -> Producer:
        async def produce(api: Api, headers: Headers) -> Answer:
            status, body = await channel_started(api, channel, phone)
            assert status == 201, body
            items = await sim_items(api, channel, phone)
            if keypad:
                status, _ = await api.call("POST", f"/sim/ars/{phone}/keypad",
                                           {"digits": items[-1]["display_code"]}, key=None)
                assert status == 200
            return await api.call("POST", v(body["id"], "confirm"), {}, headers=headers)

        return produce

    return make


MAGIC_PRODUCERS: dict[str, Callable[[str], Producer]] = {
    SUBSCRIBER_CHECK.name: at_start("sms"),
    PASS_CHECK.name: at_start("pass"),
    ADDON_CHECK.name: at_confirm,
    CALL.name: reported("ars"),
    KEYPAD.name: reported("ars", keypad=True),
    PUSH.name: reported("pass"),
}


def register_magic(catalog: Catalog) -> None:
    for row in magic_rows(catalog):
        key = (row.code, row.variant, row.detail_code)
        CASES.setdefault(key, Case(MAGIC_PRODUCERS[row.point.name](row.phone), how=f"magic {row.phone}"))


register_magic(Catalog.load())


# ---- rows the service's own rules answer ----


@case("2000", how="the right code")
async def success(api: Api, headers: Headers) -> Answer:
    vid, phone = await sms_started(api)
    return await api.call("POST", v(vid, "confirm"), {"code": await sms_code(api, phone)}, headers=headers)


@case("3001", how="a start without a subject")
async def invalid_request(api: Api, headers: Headers) -> Answer:
    return await api.call("POST", "/v1/verifications", {"channel": "sms"}, headers=headers)


@case("3002", how="an Idempotency-Key again with another body")
async def idempotency_mismatch(api: Api, headers: Headers) -> Answer:
    key = {"Idempotency-Key": f"reach-{next(_numbers)}"}
    status, _ = await api.call("POST", "/v1/verifications", start_body(plain_phone()), headers=key)
    assert status == 201
    return await api.call("POST", "/v1/verifications", start_body(plain_phone()), headers=headers | key)


@case("3003", how="an Idempotency-Key again while its first request runs")
async def idempotency_in_progress(api: Api, headers: Headers) -> Answer:
    client = simulator_of(api)
    entered, release = asyncio.Event(), asyncio.Event()
    check = client.check_subscriber

    async def slow_check(*args: Any) -> Any:
        entered.set()
        await release.wait()
        return await check(*args)

    key = {"Idempotency-Key": f"reach-{next(_numbers)}"}
    body = start_body(plain_phone())
    client.check_subscriber = slow_check  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(api.call("POST", "/v1/verifications", body, headers=key))
        await asyncio.wait_for(entered.wait(), 10)
        answer = await api.call("POST", "/v1/verifications", body, headers=headers | key)
        release.set()
        assert (await first)[0] == 201
    finally:
        release.set()
        client.check_subscriber = check  # type: ignore[method-assign]
    return answer


@case("3004", how="a provider event without a signature")
async def bad_signature(api: Api, headers: Headers) -> Answer:
    return await api.call("POST", "/v1/providers/simulator/events", {"event_id": "e1"}, key=None,
                          headers=headers)


@case("3005", how="fallback from a verification that does not offer it")
async def fallback_not_offered(api: Api, headers: Headers) -> Answer:
    status, body = await channel_started(api, "pass", plain_phone())
    assert status == 201
    return await api.call("POST", v(body["id"], "fallback"), {"channel": "sms"}, headers=headers)


@case("4000", how="a key token redeemed twice")
async def result_gone(api: Api, headers: Headers) -> Answer:
    _, token = await verified_sms(api)
    assert (await api.call("POST", "/v1/results", {"key_token": token}))[0] == 200
    return await api.call("POST", "/v1/results", {"key_token": token}, headers=headers)


@case("4001", how="GET of an unknown id")
async def unknown_verification(api: Api, headers: Headers) -> Answer:
    return await api.call("GET", v(UNKNOWN_ID), headers=headers)


@case("4003", "4002", how="resend of an expired verification")
async def resend_expired(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    clock_of(api).advance(api.rt.settings.sms.session_ttl_s)
    return await api.call("POST", v(vid, "resend"), headers=headers)


@case("4003", "4003", how="resend of a canceled verification")
async def resend_canceled(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    assert (await api.call("POST", v(vid, "cancel")))[0] == 200
    return await api.call("POST", v(vid, "resend"), headers=headers)


@case("4003", "4004", how="resend of an unknown id")
async def resend_unknown(api: Api, headers: Headers) -> Answer:
    return await api.call("POST", v(UNKNOWN_ID, "resend"), headers=headers)


@case("4007", how="a second start with a live tx_id")
async def duplicate_tx_id(api: Api, headers: Headers) -> Answer:
    tx_id = f"reach-tx-{next(_numbers)}"
    await sms_started(api, tx_id=tx_id)
    return await api.call("POST", "/v1/verifications", start_body(plain_phone(), tx_id=tx_id), headers=headers)


@case("4013", how="a wrong code")
async def wrong_code(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    return await api.call("POST", v(vid, "confirm"), {"code": "000000"}, headers=headers)


@case("4018", how="confirm after the session expired")
async def confirm_expired(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    clock_of(api).advance(api.rt.settings.sms.session_ttl_s)
    return await api.call("POST", v(vid, "confirm"), {"code": "000000"}, headers=headers)


@case("4101", how="no API key")
async def bad_api_key(api: Api, headers: Headers) -> Answer:
    return await api.call("POST", "/v1/verifications", start_body(plain_phone()), key=None, headers=headers)


@case("4150", how="resend after the result was redeemed")
async def already_completed(api: Api, headers: Headers) -> Answer:
    vid, token = await verified_sms(api)
    assert (await api.call("POST", "/v1/results", {"key_token": token}))[0] == 200
    return await api.call("POST", v(vid, "resend"), headers=headers)


@case("4301", how="the 3rd wrong code")
async def too_many_attempts(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    for _ in range(2):
        assert (await api.call("POST", v(vid, "confirm"), {"code": "000000"}))[0] == 422
    return await api.call("POST", v(vid, "confirm"), {"code": "000000"}, headers=headers)


@case("4302", how="the 4th resend")
async def too_many_resends(api: Api, headers: Headers) -> Answer:
    vid, _ = await sms_started(api)
    for _ in range(3):
        assert (await api.call("POST", v(vid, "resend")))[0] == 200
    return await api.call("POST", v(vid, "resend"), headers=headers)


@case("4500", how="ARS confirm while the call rings")
async def ars_no_result(api: Api, headers: Headers) -> Answer:
    _, body = await channel_started(api, "ars", plain_phone())
    return await api.call("POST", v(body["id"], "confirm"), {}, headers=headers)


@case("4501", how="ARS resend while the call rings")
async def ars_call_in_progress(api: Api, headers: Headers) -> Answer:
    _, body = await channel_started(api, "ars", plain_phone())
    return await api.call("POST", v(body["id"], "resend"), headers=headers)


async def ars_keyed(api: Api, digits: str | None) -> str:
    phone = plain_phone()
    _, body = await channel_started(api, "ars", phone)
    calls = await sim_items(api, "ars", phone)
    keyed = calls[-1]["display_code"] if digits is None else digits
    status, _ = await api.call("POST", f"/sim/ars/{phone}/keypad", {"digits": keyed}, key=None)
    assert status == 200
    return str(body["id"])


@case("4502", how="ARS resend after the successful call")
async def ars_already_called(api: Api, headers: Headers) -> Answer:
    vid = await ars_keyed(api, None)
    return await api.call("POST", v(vid, "resend"), headers=headers)


@case("4602", how="wrong digits keyed into the ARS call")
async def ars_wrong_digits(api: Api, headers: Headers) -> Answer:
    vid = await ars_keyed(api, "xx")
    return await api.call("POST", v(vid, "confirm"), {}, headers=headers)


@case("9999", status=503, how="the upstream unreachable")
async def internal_error(api: Api, headers: Headers) -> Answer:
    client = simulator_of(api)
    base = client.base_url
    client.base_url = "http://127.0.0.1:9/sim"  # the discard port: nothing listens
    try:
        return await api.call("POST", "/v1/verifications", start_body(plain_phone()), headers=headers)
    finally:
        client.base_url = base


@case("AP005", how="an mOTP start for an unregistered user")
async def motp_unknown_user(api: Api, headers: Headers) -> Answer:
    return await api.call("POST", "/v1/verifications", {
        "channel": "motp", "motp_user_id": "nobody", "subject": {"name": "홍길동", "phone": "01012345678"}},
        headers=headers)


@case("AP011", how="registering a locked mOTP user again")
async def motp_registration_locked(api: Api, headers: Headers) -> Answer:
    await lock(api, await enrol(api))
    return await api.call("POST", "/v1/motp/users",
                          {"user_id": "trainee-1", "name": "홍길동", "phone": "010-1234-5678"}, headers=headers)


@case("AP901", how="a wrong mOTP code")
async def motp_mismatch(api: Api, headers: Headers) -> Answer:
    app = await enrol(api)
    vid = await started(api)
    return await api.call("POST", v(vid, "confirm"), {"code": wrong(now_code(app, api))}, headers=headers)


@case("AP902", how="an mOTP start for a locked user")
async def motp_locked(api: Api, headers: Headers) -> Answer:
    await lock(api, await enrol(api))
    return await api.call("POST", "/v1/verifications", {
        "channel": "motp", "motp_user_id": "trainee-1", "subject": {"name": "홍길동", "phone": "01012345678"}},
        headers=headers)


@case("3006", how="a 6th send to one phone within 10 minutes (limits.per_phone, on by default)")
async def over_a_limit(api: Api, headers: Headers) -> Answer:
    phone = plain_phone()
    for _ in range(5):
        status, body = await api.call("POST", "/v1/verifications", start_body(phone))
        assert status == 201, body
    return await api.call("POST", "/v1/verifications", start_body(phone), headers=headers)


@case("3007", how="a path no route has")
async def route_not_found(api: Api, headers: Headers) -> Answer:
    return await api.call("GET", "/v1/no-such-route", headers=headers)


@case("3008", how="a method the route does not take")
async def method_not_allowed(api: Api, headers: Headers) -> Answer:
    return await api.call("DELETE", "/v1/verifications", headers=headers)


# Rows whose producer is written to the contract but that no path of this service answers yet,
# and why: their tests are expected to fail (strictly: once the path exists, drop the entry).
UNREACHABLE: dict[Key, str] = {}
