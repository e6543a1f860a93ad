"""The Twilio SMS adapter against a stub of Twilio's documented Messages API."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from structlog.testing import capture_logs

from machines.events import Refusal
from service.errors import PermanentFailureError, ProviderError
from service.providers.ports import SmsGateway
from service.providers.twilio import PermanentSendError, TwilioSmsGateway, to_e164
from tests.stubs.server import Canned
from tests.stubs.twilio_stub import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, AUTH_TOKEN, TwilioStub

SENDER = "+15005550006"
FULL_WIDTH = {ord(digit): ord(digit) + 0xFEE0 for digit in "0123456789"}  # "0" -> U+FF10
ARABIC_INDIC = {ord(digit): ord(digit) - ord("0") + 0x0660 for digit in "0123456789"}
TEXT = "[테스트서비스] 본인확인 인증번호 [482910]를 입력해주세요."


@pytest.fixture
async def stub() -> AsyncIterator[TwilioStub]:
    async with TwilioStub() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def gateway(stub: TwilioStub, session: aiohttp.ClientSession, **options: Any) -> TwilioSmsGateway:
    options.setdefault("timeout_s", 2.0)
    if "messaging_service_sid" not in options:
        options.setdefault("from_number", SENDER)
    options.setdefault("auth_token", AUTH_TOKEN)
    return TwilioSmsGateway(account_sid=ACCOUNT_SID, session=session, base_url=stub.base_url, **options)


def test_it_is_an_sms_gateway(stub: TwilioStub, session: aiohttp.ClientSession):
    adapter: SmsGateway = gateway(stub, session)
    assert adapter
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSmsGateway(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, session=session, timeout_s=1)


class TestWire:
    async def test_the_documented_request(self, stub, session):
        await gateway(stub, session).send_sms("vf_0001:1", "01012345678", TEXT)
        sent = stub.on("messages")[0]
        assert (sent.method, sent.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
        assert sent.content_type == "application/x-www-form-urlencoded"
        assert sent.body == {"To": "+821012345678", "From": SENDER, "Body": TEXT}
        scheme, _, value = sent.headers["Authorization"].partition(" ")
        assert (scheme, base64.b64decode(value).decode()) == ("Basic", f"{ACCOUNT_SID}:{AUTH_TOKEN}")
        assert stub.sent[0]["body"] == TEXT  # the Korean text arrived intact
        assert not any("idempotency" in header.lower() for header in sent.headers)  # Twilio documents none

    async def test_a_messaging_service_instead_of_a_from_number(self, stub, session):
        await gateway(stub, session, messaging_service_sid="MG0123456789abcdef0123456789abcdef").send_sms(
            "vf:1", "010-1234-5678", TEXT)
        assert stub.on("messages")[0].body == {
            "To": "+821012345678", "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef", "Body": TEXT}

    async def test_an_api_key_authenticates_for_the_account(self, stub, session):
        await gateway(stub, session, api_key_sid=API_KEY_SID, auth_token=API_KEY_SECRET).send_sms(
            "vf:1", "01012345678", TEXT)
        value = stub.on("messages")[0].headers["Authorization"].partition(" ")[2]
        assert base64.b64decode(value).decode() == f"{API_KEY_SID}:{API_KEY_SECRET}"
        assert len(stub.sent) == 1

    async def test_the_status_callback_names_the_reference(self, stub, session):
        adapter = gateway(stub, session, status_callback="https://veriflow.example/v1/providers/twilio/events?x=1")
        await adapter.send_sms("vf_0001:2", "01012345678", TEXT)
        callback = urlsplit(stub.on("messages")[0].body["StatusCallback"])
        assert (callback.hostname, callback.path) == ("veriflow.example", "/v1/providers/twilio/events")
        assert parse_qs(callback.query) == {"x": ["1"], "reference": ["vf_0001:2"]}


class TestPhoneNumbers:
    @pytest.mark.parametrize(("phone", "e164"), [
        ("01012345678", "+821012345678"),
        ("010-1234-5678", "+821012345678"),
        ("010 1234 5678", "+821012345678"),
        ("(010) 1234.5678", "+821012345678"),
        ("+82 10-1234-5678", "+821012345678"),
        ("+82 010 1234 5678", "+821012345678"),
        ("+821012345678", "+821012345678"),
        ("0082-10-1234-5678", "+821012345678"),
        ("0111234567", "+82111234567"),
        ("01612345678", "+821612345678"),
        ("+14155552671", "+14155552671"),
        ("001-415-555-2671", "+14155552671"),
    ])
    def test_korean_numbers_become_e164(self, phone, e164):
        assert to_e164(phone) == e164

    @pytest.mark.parametrize("phone", [
        "", "12345", "02-123-4567", "0212345678", "010123", "0101234567890", "+82 2 123 4567",
        "01012345678".translate(FULL_WIDTH), "010-1234-567" + "8".translate(FULL_WIDTH),
        "01012345678".translate(ARABIC_INDIC), "01012345678\n", "+0123456789", "+1234", "82101234567a",
    ])
    def test_anything_else_is_not_a_number(self, phone):
        assert to_e164(phone) is None

    async def test_the_stub_receives_e164(self, stub, session):
        await gateway(stub, session).send_sms("vf:1", "+82 010-9876-5432", TEXT)
        assert stub.sent[0]["to"] == "+821098765432"

    async def test_a_number_that_is_not_one_fails_for_good_without_a_request(self, stub, session):
        with pytest.raises(PermanentSendError) as caught:
            await gateway(stub, session).send_sms("vf:1", "02-123-4567", TEXT)
        assert caught.value.refusal == Refusal("4016")
        assert stub.seen == []


class TestMapping:
    @pytest.mark.parametrize(("twilio_code", "refusal"), [
        (21211, Refusal("4016")),
        (21614, Refusal("4016")),
        (21635, Refusal("4016")),
        (21612, Refusal("4016")),
        (21610, Refusal("6756")),
    ])
    async def test_a_number_that_can_never_get_it_fails_for_good(self, stub, session, twilio_code, refusal):
        stub.numbers["+821012345678"] = twilio_code
        with pytest.raises(PermanentSendError) as caught:
            await gateway(stub, session).send_sms("vf:1", "01012345678", TEXT)
        assert (caught.value.refusal, caught.value.twilio_code) == (refusal, twilio_code)
        assert isinstance(caught.value, ProviderError)
        assert isinstance(caught.value, PermanentFailureError)  # the outbox drops it, not retries it
        assert stub.sent == []

    async def test_twilios_own_validation_of_to_is_permanent_too(self, stub, session, monkeypatch):
        monkeypatch.setattr("service.providers.twilio.to_e164", lambda phone: "+8210")
        with pytest.raises(PermanentSendError) as caught:
            await gateway(stub, session).send_sms("vf:1", "01012345678", TEXT)
        assert caught.value.twilio_code == 21211

    @pytest.mark.parametrize("canned", [
        Canned(429, "error_20429"),
        Canned(500, "error_20500"),
        Canned(503, text="<html>unavailable</html>", content_type="text/html"),
        Canned(502, text=""),
        Canned(400, "error_21606"),  # our From number: configuration, not the recipient
        Canned(400, "error_21617"),
        Canned(400, text="not json", content_type="text/plain"),
        Canned(500, "error_21211"),  # a "permanent" code outside 4xx is not trusted as one
        Canned(301, text=""),
    ])
    async def test_retryable_answers_are_provider_errors(self, stub, session, canned):
        stub.knobs.canned["messages"] = canned
        with pytest.raises(ProviderError) as caught:
            await gateway(stub, session).send_sms("vf:1", "01012345678", TEXT)
        assert not isinstance(caught.value, PermanentSendError)

    async def test_wrong_credentials_are_a_provider_error(self, stub, session):
        with pytest.raises(ProviderError, match="HTTP 401 \\(error 20003\\)") as caught:
            await gateway(stub, session, auth_token="wrong-token").send_sms("vf:1", "01012345678", TEXT)
        assert not isinstance(caught.value, PermanentSendError)

    async def test_a_wrong_account_is_a_provider_error(self, stub, session):
        other = "AC" + "f" * 32
        adapter = TwilioSmsGateway(account_sid=other, api_key_sid=API_KEY_SID, auth_token=API_KEY_SECRET,
                                   session=session, timeout_s=2, from_number=SENDER, base_url=stub.base_url)
        with pytest.raises(ProviderError, match="HTTP 404 \\(error 20404\\)"):
            await adapter.send_sms("vf:1", "01012345678", TEXT)
        assert stub.on("messages")[0].path == f"/2010-04-01/Accounts/{other}/Messages.json"

    @pytest.mark.parametrize("canned", [
        Canned(201, text="<html>created</html>", content_type="text/html"),
        Canned(201, text=""),
        Canned(200, text='{"sid": 7}'),
    ])
    async def test_an_accepted_message_with_an_unreadable_body_is_sent(self, stub, session, canned):
        stub.knobs.canned["messages"] = canned
        with capture_logs() as logs:
            await gateway(stub, session).send_sms("vf:1", "01012345678", TEXT)  # no retry: no duplicate SMS
        assert [line["sid"] for line in logs if line["event"] == "twilio.sent"] == [None]


class TestTimeouts:
    async def test_a_slow_twilio_is_a_provider_error_quickly(self, stub, session):
        stub.knobs.delay_s["messages"] = 5
        started = time.monotonic()
        with pytest.raises(ProviderError, match="unreachable"):
            await gateway(stub, session, timeout_s=0.2).send_sms("vf:1", "01012345678", TEXT)
        assert time.monotonic() - started < 1.5

    async def test_nobody_listening_is_a_provider_error(self, session):
        async with TwilioStub() as gone:
            url = gone.base_url
        adapter = TwilioSmsGateway(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, session=session,
                                   timeout_s=1, from_number=SENDER, base_url=url)
        with pytest.raises(ProviderError, match="unreachable"):
            await adapter.send_sms("vf:1", "01012345678", TEXT)


class TestSecrets:
    async def test_no_token_text_code_or_number_in_logs_or_errors(self, stub, session):
        adapter = gateway(stub, session)
        errors: list[str] = []
        stub.numbers["+821011112222"] = 21211  # its error message quotes the number
        with capture_logs() as logs:
            await adapter.send_sms("vf:1", "01012345678", TEXT)
            for phone in ("01011112222", "02-123-4567"):
                with pytest.raises(PermanentSendError) as caught:
                    await adapter.send_sms("vf:2", phone, TEXT)
                errors.append(str(caught.value))
            stub.knobs.canned["messages"] = Canned(500, "error_20500")
            with pytest.raises(ProviderError) as caught:
                await adapter.send_sms("vf:3", "01012345678", TEXT)
            errors.append(str(caught.value))
        text = repr(logs) + repr(errors) + repr(adapter)
        assert logs
        for secret in (AUTH_TOKEN, TEXT, "482910", "01012345678", "1012345678", "1011112222", "123-4567"):
            assert secret not in text
        assert {"twilio.sent", "twilio.refused", "twilio.number_invalid", "twilio.error"} <= {
            line["event"] for line in logs}
