"""Real providers selected by configuration, end to end through the API: PortOne (its stub) as
the SMS upstream that draws, sends and checks the code; Twilio (its stub) as the SMS sender
the outbox delivers through when veriflow draws the code."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest
import yaml
from aiohttp.test_utils import TestServer

from service import settings as settings_module
from service.api.app import build_app
from service.clock import ManualClock
from service.providers.portone import PortOneProvider
from service.providers.twilio import TwilioSmsGateway
from service.runtime import build_runtime
from service.settings import ConfigError
from service.store.client import StoreInfo
from tests.conftest import API_KEY, Api, free_port
from tests.stubs.portone_stub import IMP_KEY, IMP_SECRET, PortOneStub
from tests.stubs.server import Canned
from tests.stubs.twilio_stub import ACCOUNT_SID, AUTH_TOKEN, TwilioStub

FAKE_STORE = pytest.mark.parametrize("store_client", ["fake"], indirect=True)

PHONE = "01012345678"
ENV = {"VERIFLOW_API_KEYS": f"acme:{API_KEY}", "VERIFLOW_SECRET_KEY": "test-secret-key",
       "VERIFLOW_PROVIDER_SECRET": "test-provider-secret",
       "VERIFLOW_PORTONE_IMP_KEY": IMP_KEY, "VERIFLOW_PORTONE_IMP_SECRET": IMP_SECRET,
       "VERIFLOW_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "VERIFLOW_TWILIO_AUTH_TOKEN": AUTH_TOKEN}


def load(tmp_path: Path, providers: dict[str, Any], **env: str) -> settings_module.Settings:
    config = tmp_path / "providers.yaml"
    config.write_text(yaml.safe_dump({"providers": providers}), encoding="utf-8")
    return settings_module.load({**ENV, "VERIFLOW_CONFIG": str(config), **env})


async def serve(store_client: Any, clock: ManualClock, settings: settings_module.Settings) -> AsyncIterator[Api]:
    rt = await build_runtime(replace(settings, allow_private_callbacks=True), clock=clock, client=store_client,
                             store_info=StoreInfo("test", durable=False))
    app = build_app(rt, simulator=True)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    rt.providers.carriers.base_url = base + "/sim"  # type: ignore[attr-defined]
    await rt.dispatcher.ensure_groups()
    async with aiohttp.ClientSession() as session:
        yield Api(session, base, rt, app)
    await server.close()
    await rt.close()


@pytest.fixture
async def portone() -> AsyncIterator[PortOneStub]:
    async with PortOneStub() as stub:
        yield stub


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStub]:
    async with TwilioStub() as stub:
        yield stub


@pytest.fixture
async def upstream_api(store_client, clock, portone, tmp_path) -> AsyncIterator[Api]:
    settings = load(tmp_path, {"sms_upstream": "portone", "portone": {"base_url": portone.base_url,
                                                                      "company": "veriflow-test"}})
    async for api in serve(store_client, clock, settings):
        assert isinstance(api.rt.providers.code_upstream, PortOneProvider)
        yield api


@pytest.fixture
async def twilio_api(store_client, clock, twilio, tmp_path) -> AsyncIterator[Api]:
    settings = load(tmp_path, {"sms": "twilio", "twilio": {"base_url": twilio.base_url,
                                                           "from_number": "+15005550006"}})
    async for api in serve(store_client, clock, settings):
        assert isinstance(api.rt.providers.sms, TwilioSmsGateway)
        yield api


def start_body(phone: str = PHONE, **extra: Any) -> dict[str, Any]:
    return {"channel": "sms", "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1",
                                          "phone": phone, "carrier": "LGU+"}, **extra}


def imp_uid_of(portone: PortOneStub, verification_id: str, count: int = 1) -> str:
    uids = [uid for uid, merchant in portone.merchant_uids.items() if merchant == verification_id]
    assert len(uids) == count, uids
    return uids[-1]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


@FAKE_STORE
class TestPortOneUpstream:
    async def test_start_asks_portone_with_the_subject_and_confirm_verifies(self, upstream_api, portone):
        """Start sends requestOTP (merchant_uid = the verification id, company = the service
        name, PortOne's carrier name); nothing goes through the outbox; PortOne's code verifies."""
        status, started = await upstream_api.call("POST", "/v1/verifications",
                                                  start_body(service_name="Acme Shop"))
        assert status == 201, started
        (request,) = portone.on("request")
        assert request.headers["Authorization"].startswith("Bearer ")
        assert request.body == {"name": "홍길동", "phone": PHONE, "birth": "19900101", "gender_digit": "1",
                                "carrier": "LGT", "is_mvno": False, "merchant_uid": started["id"],
                                "company": "Acme Shop"}
        assert await upstream_api.rt.dispatcher.read_once(block_ms=1) == 0, "no SMS effect: PortOne sent it"
        imp_uid = imp_uid_of(portone, started["id"])
        status, body = await upstream_api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                               {"code": portone.otps[imp_uid]})
        assert (status, body["status"]) == (200, "verified"), body
        assert "key_token" in body
        (confirm,) = portone.on("confirm")
        assert confirm.path == f"/certifications/otp/confirm/{imp_uid}"
        assert confirm.body == {"otp": portone.otps[imp_uid]}
        record = await upstream_api.rt.store.load(started["id"])
        assert record is not None
        assert (record.provider, record.code_hash) == ("portone", None)

    async def test_wrong_codes_count_against_the_three_attempts(self, upstream_api, portone):
        """PortOne's mismatch (the second 2910 row) is a wrong code: 4013 with 2 then 1 left,
        then 4301 failed; each confirm asks PortOne exactly once."""
        _, started = await upstream_api.call("POST", "/v1/verifications", start_body())
        code = portone.otps[imp_uid_of(portone, started["id"])]
        seen = []
        for _ in range(3):
            status, body = await upstream_api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                                   {"code": wrong(code)})
            seen.append((status, body["error"]["code"], body["error"].get("attempts_left")))
        assert [s[:2] for s in seen] == [(422, "4013"), (422, "4013"), (429, "4301")]
        assert len(portone.on("confirm")) == 3
        status, body = await upstream_api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                               {"code": code})
        assert (status, body["error"]["code"]) == (429, "4301")
        assert len(portone.on("confirm")) == 3, "a finished verification does not ask PortOne"

    async def test_resend_asks_portone_again_and_only_the_new_code_verifies(self, upstream_api, portone):
        _, started = await upstream_api.call("POST", "/v1/verifications", start_body())
        vid = started["id"]
        first = portone.otps[imp_uid_of(portone, vid)]
        status, _ = await upstream_api.call("POST", f"/v1/verifications/{vid}/resend")
        assert status == 200
        second_uid = imp_uid_of(portone, vid, count=2)
        status, body = await upstream_api.call("POST", f"/v1/verifications/{vid}/confirm", {"code": first})
        if first != portone.otps[second_uid]:
            assert (status, body["error"]["code"]) == (422, "4013")
        status, body = await upstream_api.call("POST", f"/v1/verifications/{vid}/confirm",
                                               {"code": portone.otps[second_uid]})
        assert (status, body["status"]) == (200, "verified")
        assert portone.on("confirm")[-1].path.endswith(second_uid)

    async def test_three_resends_then_4302_without_asking_portone(self, upstream_api, portone):
        _, started = await upstream_api.call("POST", "/v1/verifications", start_body())
        codes = [(await upstream_api.call("POST", f"/v1/verifications/{started['id']}/resend"))[0]
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert len(portone.on("request")) == 4, "the start and three resends; the refused 4th asks nothing"

    async def test_a_refused_subject_fails_at_start(self, upstream_api, portone):
        portone.knobs.canned["request"] = Canned(200, "otp_request_refused")
        status, body = await upstream_api.call("POST", "/v1/verifications", start_body())
        assert (status, body["error"]["code"]) == (422, "2910")

    async def test_portone_down_at_confirm_is_503_and_spends_no_attempt(self, upstream_api, portone):
        _, started = await upstream_api.call("POST", "/v1/verifications", start_body())
        portone.knobs.canned["confirm"] = Canned(500, "server_error")
        status, body = await upstream_api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                               {"code": "000000"})
        assert (status, body["error"]["code"]) == (503, "9999")
        status, body = await upstream_api.call("GET", f"/v1/verifications/{started['id']}")
        assert body["attempts_left"] == 3

    async def test_a_pass_refusal_falls_back_to_portones_sms(self, upstream_api, portone):
        """PASS refuses 6707 (a magic number of the simulator, which still plays PASS); the
        fallback to SMS asks PortOne, whose code then verifies the same verification."""
        body = start_body("01067076036", channel="pass")
        body["subject"]["carrier"] = "SKT"
        status, failed = await upstream_api.call("POST", "/v1/verifications", body)
        assert (status, failed["error"]["code"], failed["verification"]["fallback"]) == (422, "6707", ["sms"])
        vid = failed["verification"]["id"]
        status, switched = await upstream_api.call("POST", f"/v1/verifications/{vid}/fallback", {"channel": "sms"})
        assert (status, switched["channel"], switched["status"]) == (200, "sms", "pending"), switched
        (request,) = portone.on("request")
        assert request.body is not None
        assert (request.body["phone"], request.body["merchant_uid"]) == ("01067076036", vid)
        status, verified = await upstream_api.call("POST", f"/v1/verifications/{vid}/confirm",
                                                   {"code": portone.otps[imp_uid_of(portone, vid)]})
        assert (status, verified["status"]) == (200, "verified")

    async def test_concurrent_confirms_ask_once_each(self, upstream_api, portone):
        """Each request asks PortOne once, whatever retries its commit takes."""
        _, started = await upstream_api.call("POST", "/v1/verifications", start_body())
        code = portone.otps[imp_uid_of(portone, started["id"])]
        answers = await asyncio.gather(*(
            upstream_api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": wrong(code)})
            for _ in range(3)))
        assert sorted(status for status, _ in answers) == [422, 422, 429]
        assert len(portone.on("confirm")) == 3


@FAKE_STORE
class TestTwilioSender:
    async def test_the_outbox_delivers_the_code_through_twilio(self, twilio_api, twilio):
        """veriflow draws the code; the outbox sends it with Twilio (Basic auth, E.164 To, From,
        the text with the code); that code verifies."""
        status, started = await twilio_api.call("POST", "/v1/verifications", start_body(service_name="Acme"))
        assert status == 201
        for _ in range(100):
            await twilio_api.rt.dispatcher.read_once(block_ms=1)
            if twilio.sent:
                break
            await asyncio.sleep(0.01)
        (message,) = twilio.sent
        (seen,) = twilio.on("messages")
        assert seen.body is not None
        assert (seen.body["To"], seen.body["From"]) == ("+821012345678", "+15005550006")
        assert seen.headers["Authorization"].startswith("Basic ")
        found = re.search(r"\[([0-9]{6})\]", message["body"])
        assert found is not None
        assert "[Acme]" in message["body"]
        status, body = await twilio_api.call("POST", f"/v1/verifications/{started['id']}/confirm",
                                             {"code": found.group(1)})
        assert (status, body["status"]) == (200, "verified")
        status, inbox = await twilio_api.call("GET", f"/sim/sms?phone={PHONE}", key=None)
        assert inbox["messages"] == [], "the simulator's gateway sent nothing"


class TestConfiguration:
    def test_a_secret_in_yaml_is_refused(self, tmp_path):
        with pytest.raises(ConfigError, match=r"providers\.portone\.imp_secret .*environment"):
            load(tmp_path, {"portone": {"imp_secret": "oops"}})

    def test_an_unknown_provider_for_a_role_is_refused(self, tmp_path):
        with pytest.raises(ConfigError, match=r"providers\.calls must be one of simulator"):
            load(tmp_path, {"calls": "twilio"})

    async def test_a_missing_credential_names_its_variable(self, tmp_path, clock):
        settings = load(tmp_path, {"sms_upstream": "portone"}, VERIFLOW_PORTONE_IMP_SECRET="")
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        with pytest.raises(ConfigError, match="VERIFLOW_PORTONE_IMP_SECRET"):
            await build_runtime(settings, clock=clock, client=client, store_info=StoreInfo("t", durable=False))
        await client.aclose()

    def test_webhook_secrets_per_provider_from_the_environment(self, tmp_path):
        settings = load(tmp_path, {}, VERIFLOW_PROVIDER_SECRET_ACME_CALLS="acme-secret")
        assert dict(settings.providers.webhook_secrets) == {"acme_calls": "acme-secret"}
