"""Configuration of the ARS and PASS channels: the fallback chain as data, its validation, the
catalog codes the new channels use, and the documentation of the new routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from machines import fallback
from machines.channels import MACHINES
from machines.events import IssuedCode, ProviderReport, Start, StartCall, SwitchChannel
from machines.events import NewCall as Call
from machines.record import Verification
from machines.vocabulary import Channel, Code, Status
from service import settings as settings_module
from service.catalog import Catalog
from service.settings import ConfigError
from tests.conftest import Api

T0 = 1_000_000
SMS_HINT = "문자 (SMS)"  # the customer message tells the user to use SMS instead


def load(tmp_path: Path, text: str) -> settings_module.Settings:
    path = tmp_path / "override.yaml"
    path.write_text(text, encoding="utf-8")
    return settings_module.load({"VERIFLOW_CONFIG": str(path)})


class TestFallbackChain:
    def test_pass_offers_sms_exactly_where_the_catalog_says_to_use_sms(self):
        """The default chain is the PASS codes whose customer message sends the user to SMS."""
        catalog = Catalog.load()
        told = {e.code for e in catalog.entries if "pass" in e.channels and SMS_HINT in e.messages["ko"]}
        assert told == {"6707", "6751"}
        policy = settings_module.load({}).policy(Channel.PASS)
        assert policy.fallback == (("sms", frozenset(told)),)
        assert settings_module.load({}).policy(Channel.SMS).fallback == ()

    def test_another_chain_is_a_configuration_change(self, tmp_path):
        """`fallback: {ars: {sms: [4611]}}` makes a rejected ARS call offer SMS, with no new code."""
        settings = load(tmp_path, 'fallback: {ars: {sms: ["4611"]}}\n')
        policy = settings.policy(Channel.ARS)
        record = Verification(id="v1", client_id="c1", channel=Channel.ARS, state="new", status=Status.PENDING,
                              version=0, definition="", created_at=T0, subject="sealed")
        record = MACHINES[Channel.ARS].decide(record, StartCall(T0, Call("12", "sealed-12")), policy).record
        failed = MACHINES[Channel.ARS].decide(
            record, ProviderReport(T0 + 5, "ars.call_result", "4611", None, 1), policy).record
        assert (failed.status, failed.last_code, failed.fallback, failed.subject) == (
            Status.FAILED, "4611", "sms", "sealed")
        switch = SwitchChannel(T0 + 9, "sms", Start(T0 + 9, issued_code=IssuedCode("h", "s")))
        switched = fallback.decide(MACHINES, failed, switch, settings.policy).record
        assert (switched.channel, switched.state, switched.status) == (Channel.SMS, "code_sent", Status.PENDING)
        other = MACHINES[Channel.ARS].decide(
            record, ProviderReport(T0 + 5, "ars.call_result", "4612", None, 1), policy).record
        assert (other.fallback, other.subject) == (None, None)

    @pytest.mark.parametrize("text", [
        "fallback: {fax: {sms: ['1']}}\n", "fallback: {pass: {pass: ['6707']}}\n",
        "fallback: {pass: {sms: '6707'}}\n", "fallback: [pass]\n", "fallback: {pass: [sms]}\n",
        "channels: {ars: {max_calls: 0}}\n", "channels: {pass: {push_timeout_s: -1}}\n",
    ])
    def test_bad_values_stop_the_service_with_the_key_named(self, tmp_path, text):
        """A fallback or channel value that cannot work is refused at start-up."""
        with pytest.raises(ConfigError, match="configuration key"):
            load(tmp_path, text)

    def test_ars_and_pass_settings(self, tmp_path):
        """max_calls counts every call; push_timeout_s is the push's own deadline."""
        settings = load(tmp_path, "channels: {ars: {max_calls: 5}, pass: {push_timeout_s: 60}}\n")
        assert settings.policy(Channel.ARS).max_resends == 4
        assert settings.policy(Channel.PASS).push_timeout_s == 60
        assert settings.policy(Channel.PASS).session_ttl_s == 420


class TestCatalogAndDocs:
    def test_every_code_the_machines_name_is_in_the_catalog(self):
        """Each Code has an entry; the two this change defines are marked service-defined."""
        catalog = Catalog.load()
        for code in Code:
            assert code.value in catalog, code
        for code in (Code.BAD_SIGNATURE, Code.FALLBACK_NOT_OFFERED):
            assert catalog.get(code).service_defined
        assert catalog.get(Code.BAD_SIGNATURE).http_status == 401

    async def test_openapi_describes_the_new_routes(self, api: Api):
        """The webhook (no API key, a signature header) and fallback routes are documented."""
        status, document = await api.call("GET", "/openapi.json", key=None)
        assert status == 200
        hook = document["paths"]["/v1/providers/{provider}/events"]["post"]
        assert hook["security"] == []
        assert [p["name"] for p in hook["parameters"]] == ["provider", "X-Veriflow-Signature"]
        assert "409" in document["paths"]["/v1/verifications/{id}/fallback"]["post"]["responses"]
        start = document["paths"]["/v1/verifications"]["post"]["requestBody"]
        assert start["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StartBody"}
        union = document["components"]["schemas"]["StartBody"]
        assert sorted(union["discriminator"]["mapping"]) == ["ars", "motp", "pass", "sms"]

    @pytest.mark.settings(ars=settings_module.ArsSettings(420, 3, 4))
    async def test_display_code_length_comes_from_configuration(self, api: Api):
        """display_code_length 4: the screen shows 4 digits."""
        status, body = await api.call("POST", "/v1/verifications", {
            "channel": "ars", "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1",
                                          "phone": "01012341234", "carrier": "KT"}})
        assert status == 201
        assert len(body["display_code"]) == 4
