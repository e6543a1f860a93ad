"""The PortOne certification SMS-OTP adapter against a stub of PortOne's documented API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from machines.events import Refusal
from service.errors import ProviderError
from service.providers.code_upstream import CodeUpstream
from service.providers.portone import MAPPING, Body, PortOneProvider, portone_carrier
from service.providers.ports import Subscriber
from tests.stubs.portone_stub import IMP_KEY, IMP_SECRET, PortOneStub
from tests.stubs.server import Canned

SUBJECT = Subscriber(name="홍길동", birth="19900101", gender_digit="1", phone="01012345678",
                     carrier="SKT", is_mvno=False)
MISMATCH = Refusal("2910", variant="code_mismatch")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub() -> AsyncIterator[PortOneStub]:
    async with PortOneStub() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def provider(stub: PortOneStub, session: aiohttp.ClientSession, **options: Any) -> PortOneProvider:
    options.setdefault("timeout_s", 2.0)
    return PortOneProvider(imp_key=IMP_KEY, imp_secret=IMP_SECRET, session=session,
                           base_url=stub.base_url, **options)


async def issued(adapter: PortOneProvider, reference: str = "vf_0001") -> str:
    answer = await adapter.request_code(reference, SUBJECT, "테스트서비스")
    assert isinstance(answer, str), answer
    return answer


def test_it_is_a_code_upstream(stub: PortOneStub, session: aiohttp.ClientSession):
    adapter: CodeUpstream = provider(stub, session)
    assert adapter


class TestWire:
    async def test_the_token_request_carries_key_and_secret_as_json(self, stub, session):
        await issued(provider(stub, session))
        token = stub.on("token")[0]
        assert (token.method, token.path, token.content_type) == ("POST", "/users/getToken", "application/json")
        assert token.body == {"imp_key": IMP_KEY, "imp_secret": IMP_SECRET}
        assert "Authorization" not in token.headers

    async def test_every_documented_request_field_with_its_type(self, stub, session):
        imp_uid = await provider(stub, session).request_code("vf_0001", SUBJECT, "테스트서비스")
        sent = stub.on("request")[0]
        assert (sent.path, sent.content_type) == ("/certifications/otp/request", "application/json")
        assert sent.headers["Authorization"] == f"Bearer {stub.tokens[0]}"
        assert sent.body == {
            "name": "홍길동", "phone": "01012345678", "birth": "19900101", "gender_digit": "1",
            "carrier": "SKT", "is_mvno": False, "company": "테스트서비스", "merchant_uid": "vf_0001",
        }
        assert type(sent.body["is_mvno"]) is bool
        assert imp_uid in stub.otps

    async def test_pg_is_sent_only_when_configured(self, stub, session):
        await issued(provider(stub, session, pg="danal.A010002002"))
        await issued(provider(stub, session))
        with_pg, without = stub.on("request")
        assert with_pg.body["pg"] == "danal.A010002002"
        assert "pg" not in without.body

    async def test_company_falls_back_to_the_configured_name_or_is_left_out(self, stub, session):
        await provider(stub, session, default_company="veriflow").request_code("a", SUBJECT, None)
        await provider(stub, session).request_code("b", SUBJECT, None)
        first, second = stub.on("request")
        assert first.body["company"] == "veriflow"
        assert "company" not in second.body

    @pytest.mark.parametrize(("carrier", "is_mvno", "sent"), [
        ("SKT", False, ("SKT", False)),
        ("KT", False, ("KT", False)),
        ("LGT", False, ("LGT", False)),
        ("LGU+", False, ("LGT", False)),
        ("KTF", False, ("KT", False)),
        ("SKT", True, ("SKT", True)),
        ("KT_MVNO", False, ("KT", True)),
        ("lgu+_mvno", False, ("LGT", True)),
    ])
    async def test_carrier_names_become_portones(self, stub, session, carrier, is_mvno, sent):
        subject = Subscriber(SUBJECT.name, SUBJECT.birth, SUBJECT.gender_digit, SUBJECT.phone, carrier, is_mvno)
        await provider(stub, session).request_code("vf", subject, "svc")
        body = stub.on("request")[0].body
        assert (body["carrier"], body["is_mvno"]) == sent

    async def test_a_carrier_portone_cannot_take_is_refused_without_a_request(self, stub, session):
        subject = Subscriber(SUBJECT.name, SUBJECT.birth, SUBJECT.gender_digit, SUBJECT.phone, "MVNO", is_mvno=True)
        assert await provider(stub, session).request_code("vf", subject, "svc") == Refusal("9998")
        assert stub.seen == []
        assert portone_carrier("U+", is_mvno=False) is None

    async def test_confirm_sends_the_otp_to_the_imp_uids_route(self, stub, session):
        adapter = provider(stub, session)
        imp_uid = await issued(adapter)
        assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) is None
        sent = stub.on("confirm")[0]
        assert sent.path == f"/certifications/otp/confirm/{imp_uid}"
        assert sent.body == {"otp": stub.otps[imp_uid]}
        assert sent.headers["Authorization"] == f"Bearer {stub.tokens[0]}"

    async def test_a_wrong_code_is_the_second_2910_row(self, stub, session):
        adapter = provider(stub, session)
        imp_uid = await issued(adapter)
        wrong = f"{(int(stub.otps[imp_uid]) + 1) % 10**6:06d}"
        refusal = await adapter.confirm_code(imp_uid, wrong)
        assert refusal == MISMATCH
        assert (refusal.code, refusal.detail_code, refusal.variant) == ("2910", None, "code_mismatch")
        assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) is None  # the user may try again


class TestToken:
    async def test_one_token_serves_many_calls(self, stub, session):
        adapter = provider(stub, session)
        imp_uid = await issued(adapter)
        await issued(adapter, "vf_0002")
        await adapter.confirm_code(imp_uid, stub.otps[imp_uid])
        assert len(stub.on("token")) == 1

    async def test_the_token_is_refreshed_before_it_expires(self, stub, session):
        clock = Clock()
        adapter = provider(stub, session, clock=clock, refresh_margin_s=60)
        await issued(adapter)
        clock.now += 1800 - 60 - 1  # still more than the margin left
        await issued(adapter)
        assert len(stub.on("token")) == 1
        clock.now += 2
        await issued(adapter)
        assert len(stub.on("token")) == 2
        assert stub.on("request")[-1].headers["Authorization"] == f"Bearer {stub.tokens[1]}"

    async def test_a_short_lived_token_is_used_once_then_replaced(self, stub, session):
        stub.token_lifetime_s = 30  # less than the margin
        adapter = provider(stub, session, refresh_margin_s=60)
        await issued(adapter)
        await issued(adapter)
        assert len(stub.on("token")) == 2

    async def test_a_401_refreshes_the_token_once_and_resends(self, stub, session):
        adapter = provider(stub, session)
        await issued(adapter)
        stub.revoke_all()  # expired or revoked on PortOne's side before expired_at
        imp_uid = await issued(adapter, "vf_0002")
        assert [seen.route for seen in stub.seen] == ["token", "request", "request", "token", "request"]
        assert stub.on("request")[-1].headers["Authorization"] == f"Bearer {stub.tokens[1]}"
        stub.revoke_all()
        assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) is None
        assert len(stub.on("token")) == 3

    async def test_a_second_401_gives_up(self, stub, session):
        stub.knobs.canned["request"] = Canned(401, "unauthorized")
        with pytest.raises(ProviderError, match="401 again"):
            await provider(stub, session).request_code("vf", SUBJECT, "svc")
        assert [seen.route for seen in stub.seen] == ["token", "request", "token", "request"]

    async def test_a_refused_api_key_is_a_provider_error(self, stub, session):
        adapter = PortOneProvider(imp_key=IMP_KEY, imp_secret="wrong-secret", session=session,
                                  timeout_s=2, base_url=stub.base_url)
        with pytest.raises(ProviderError, match="getToken answered HTTP 401") as caught:
            await adapter.request_code("vf", SUBJECT, "svc")
        assert "wrong-secret" not in str(caught.value)
        assert stub.on("request") == []

    @pytest.mark.parametrize("canned", [
        Canned(200, text='{"code": 0, "message": null, "response": {"access_token": "x"}}'),
        Canned(200, text='{"code": 0, "message": null, "response": {"access_token": "x", "now": 20, "expired_at": 10}}'),
        Canned(200, text="<html>maintenance</html>", content_type="text/html"),
        Canned(200, sample="server_error"),
        Canned(500, sample="server_error"),
    ])
    async def test_a_token_answer_without_a_usable_token_is_a_provider_error(self, stub, session, canned):
        stub.knobs.canned["token"] = canned
        with pytest.raises(ProviderError):
            await provider(stub, session).request_code("vf", SUBJECT, "svc")
        assert stub.on("request") == []

    async def test_concurrent_callers_share_one_refresh(self, stub, session):
        clock = Clock()
        adapter = provider(stub, session, clock=clock)
        await issued(adapter)
        clock.now += 3600  # the token has expired
        stub.knobs.delay_s["token"] = 0.2  # the refresh takes a while: everyone piles up behind it
        answers = await asyncio.gather(*(adapter.request_code(f"vf_{i}", SUBJECT, "svc") for i in range(10)))
        assert all(isinstance(answer, str) for answer in answers)
        assert len(stub.on("token")) == 2
        assert {seen.headers["Authorization"] for seen in stub.on("request")[1:]} == {f"Bearer {stub.tokens[1]}"}

    async def test_concurrent_401s_share_one_refresh(self, stub, session):
        adapter = provider(stub, session)
        await issued(adapter)
        stub.revoke_all()
        stub.knobs.delay_s["token"] = 0.2
        answers = await asyncio.gather(*(adapter.request_code(f"vf_{i}", SUBJECT, "svc") for i in range(10)))
        assert all(isinstance(answer, str) for answer in answers)
        assert len(stub.on("token")) == 2


class TestMapping:
    """Each row of the mapping, from the answer PortOne gives."""

    @pytest.mark.parametrize(("canned", "expected"), [
        (Canned(200, "otp_request_refused"), Refusal("2910")),
        (Canned(400, "otp_request_invalid"), Refusal("9998")),
        (Canned(400, text=""), Refusal("9998")),
        (Canned(404, text="404: Not Found", content_type="text/plain"), ProviderError),
        (Canned(404, "otp_confirm_not_found"), ProviderError),
        (Canned(500, "server_error"), ProviderError),
        (Canned(502, text="<html>bad gateway</html>", content_type="text/html"), ProviderError),
        (Canned(503, "server_error"), ProviderError),
        (Canned(200, text="not json", content_type="text/plain"), ProviderError),
        (Canned(200, text='{"code": 0, "message": "", "response": null}'), ProviderError),
        (Canned(200, text='{"code": 0, "message": "", "response": {"imp_uid": ""}}'), ProviderError),
        (Canned(200, text='{"code": "0", "response": {"imp_uid": "imp_1"}}'), ProviderError),
        (Canned(200, text="[0]"), ProviderError),
        (Canned(302, text=""), ProviderError),
    ])
    async def test_request_answers(self, stub, session, canned, expected):
        stub.knobs.canned["request"] = canned
        adapter = provider(stub, session)
        if expected is ProviderError:
            with pytest.raises(ProviderError):
                await adapter.request_code("vf", SUBJECT, "svc")
        else:
            assert await adapter.request_code("vf", SUBJECT, "svc") == expected

    async def test_subject_data_the_stub_finds_invalid_is_9998(self, stub, session):
        subject = Subscriber(SUBJECT.name, "1990-01", SUBJECT.gender_digit, SUBJECT.phone, "SKT", is_mvno=False)
        assert await provider(stub, session).request_code("vf", subject, "svc") == Refusal("9998")
        subject = Subscriber("", SUBJECT.birth, SUBJECT.gender_digit, SUBJECT.phone, "SKT", is_mvno=False)
        assert await provider(stub, session).request_code("vf", subject, "svc") == Refusal("9998")

    @pytest.mark.parametrize(("canned", "expected"), [
        (Canned(200, "otp_confirm_mismatch"), MISMATCH),
        (Canned(200, text='{"code": 0, "message": "", "response": {"certified": false}}'), MISMATCH),
        (Canned(400, "otp_confirm_already"), Refusal("4018")),
        (Canned(400, "otp_confirm_invalid"), Refusal("4018")),
        (Canned(404, "otp_confirm_not_found"), Refusal("4018")),
        (Canned(404, text="404: Not Found", content_type="text/plain"), ProviderError),
        (Canned(500, "server_error"), ProviderError),
        (Canned(500, "otp_confirm_mismatch"), ProviderError),  # a mismatch reported as a 500 is not seen as one
        (Canned(504, text="", content_type="text/plain"), ProviderError),
        (Canned(200, text='{"code": 0, "message": "", "response": {"imp_uid": "imp_1"}}'), ProviderError),
        (Canned(200, text="<html></html>", content_type="text/html"), ProviderError),
    ])
    async def test_confirm_answers(self, stub, session, canned, expected):
        adapter = provider(stub, session)
        imp_uid = await issued(adapter)
        stub.knobs.canned["confirm"] = canned
        if expected is ProviderError:
            with pytest.raises(ProviderError):
                await adapter.confirm_code(imp_uid, stub.otps[imp_uid])
        else:
            assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) == expected

    async def test_confirming_twice_or_an_unknown_imp_uid_is_4018(self, stub, session):
        adapter = provider(stub, session)
        imp_uid = await issued(adapter)
        assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) is None
        assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) == Refusal("4018")
        assert await adapter.confirm_code("imp_000000000000", "123456") == Refusal("4018")

    async def test_an_imp_uid_cannot_escape_its_route(self, stub, session):
        adapter = provider(stub, session)
        await issued(adapter)
        assert await adapter.confirm_code("../request", "123456") == Refusal("4018")
        assert stub.on("confirm")[0].path == "/certifications/otp/confirm/../request"

    def test_the_table_has_a_reason_per_row_and_a_catch_all_per_operation(self):
        assert all(row.reason for row in MAPPING)
        for operation in ("token", "request", "confirm"):
            rows = [row for row in MAPPING if row.operation == operation]
            assert (rows[-1].status, rows[-1].body) == (None, Body.ANY)
        assert {row.outcome for row in MAPPING if isinstance(row.outcome, Refusal)} == {
            Refusal("2910"), MISMATCH, Refusal("9998"), Refusal("4018")}


class TestTimeouts:
    @pytest.mark.parametrize("route", ["token", "request", "confirm"])
    async def test_a_slow_upstream_is_a_provider_error_quickly(self, stub, session, route):
        adapter = provider(stub, session, timeout_s=0.2)
        imp_uid = await issued(adapter) if route == "confirm" else "imp_1"
        stub.knobs.delay_s[route] = 5
        call = adapter.confirm_code(imp_uid, "123456") if route == "confirm" else \
            adapter.request_code("vf", SUBJECT, "svc")
        started = time.monotonic()
        with pytest.raises(ProviderError, match="unreachable"):
            await call
        assert time.monotonic() - started < 1.5

    async def test_nobody_listening_is_a_provider_error(self, session):
        async with PortOneStub() as gone:
            url = gone.base_url
        adapter = PortOneProvider(imp_key=IMP_KEY, imp_secret=IMP_SECRET, session=session,
                                  timeout_s=1, base_url=url)
        with pytest.raises(ProviderError, match="unreachable"):
            await adapter.request_code("vf", SUBJECT, "svc")


class TestSecrets:
    async def test_no_secret_token_code_or_personal_data_in_logs_or_errors(self, stub, session):
        adapter = provider(stub, session)
        errors: list[str] = []
        with capture_logs() as logs:
            imp_uid = await issued(adapter)
            stub.revoke_all()
            assert await adapter.confirm_code(imp_uid, "000000") == MISMATCH
            assert await adapter.confirm_code(imp_uid, stub.otps[imp_uid]) is None
            stub.knobs.canned["request"] = Canned(500, "server_error")
            with pytest.raises(ProviderError) as caught:
                await adapter.request_code("vf_0002", SUBJECT, "svc")
            errors.append(str(caught.value))
            stub.knobs.canned["token"] = Canned(401, "token_unauthorized")
            stub.revoke_all()
            with pytest.raises(ProviderError) as caught:
                await adapter.request_code("vf_0003", SUBJECT, "svc")
            errors.append(str(caught.value))
        text = repr(logs) + repr(errors) + repr(adapter) + repr(adapter._token)
        secrets = [IMP_SECRET, *stub.tokens, stub.otps[imp_uid], "000000", SUBJECT.name, SUBJECT.phone, SUBJECT.birth]
        assert logs
        for secret in secrets:
            assert secret not in text
        assert {"portone.token_issued", "portone.token_rejected", "portone.refused", "portone.error"} <= {
            line["event"] for line in logs}
