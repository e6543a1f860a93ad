"""Providers have ids and their own secrets, and the simulator is a tool only the service can use:
the attacks of the production issue, re-run against the API with the simulator mounted."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest

from service import signing
from service.providers.wiring import webhook_secrets
from service.simulator.app import SIMULATOR
from tests.conftest import Api
from tests.phone import read, sim_items, start
from tests.test_webhooks import HOOK, SECRET, event, send

pytestmark = pytest.mark.parametrize("store_client", ["fake"], indirect=True)

PHONE = "01022223333"


async def ringing_call(api: Api, phone: str = PHONE) -> tuple[str, dict[str, Any]]:
    status, started = await start(api, "ars", phone)
    assert status == 201, started
    (call,) = await sim_items(api, "ars", phone)
    return str(started["id"]), call


async def sim_post(api: Api, path: str, body: dict[str, Any], *, secret: str | None = None) -> tuple[int, Any]:
    raw = orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[signing.HEADER] = signing.sign(secret, raw, int(time.time()))
    async with api.session.post(api.base + "/sim" + path, data=raw, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


class TestProviderSecrets:
    async def test_an_event_for_an_unknown_provider_is_401_like_a_bad_signature(self, api: Api):
        """The attack: an event signed with the simulator's secret, replayed at another provider's
        path. Unknown provider id: 401 3004, and nothing changes."""
        vid, call = await ringing_call(api)
        body = event(call["reference"], event_type="ars.call_result")
        for provider in ("otherprovider", "portone", "simulator2"):
            status, answer = await send(api, body, path=f"/v1/providers/{provider}/events")
            assert (status, answer["error"]["code"]) == (401, "3004"), provider
        assert (await read(api, vid))["status"] == "pending"

    async def test_each_provider_signs_with_its_own_secret(self, api: Api):
        """A provider with its own secret (VERIFLOW_PROVIDER_SECRET_<ID>): the simulator's secret does
        not sign its events, nor its secret the simulator's."""
        api.rt.provider_secrets["acme"] = "acme-own-secret"
        vid, call = await ringing_call(api)
        body = event(call["reference"], event_type="ars.call_result")
        status, answer = await send(api, body, path="/v1/providers/acme/events")  # simulator's secret
        assert (status, answer["error"]["code"]) == (401, "3004")
        status, answer = await send(api, body, secret="acme-own-secret")  # at the simulator's path
        assert (status, answer["error"]["code"]) == (401, "3004")
        assert (await read(api, vid))["status"] == "pending"

    async def test_an_event_acts_only_on_a_request_sent_to_that_provider(self, api: Api):
        """Correctly signed by provider `acme`, about a call placed with the simulator: 200 and
        nothing changes; the simulator's own event then acts."""
        api.rt.provider_secrets["acme"] = "acme-own-secret"
        vid, call = await ringing_call(api)
        body = event(call["reference"], event_type="ars.call_result")
        status, answer = await send(api, body, secret="acme-own-secret", path="/v1/providers/acme/events")
        assert (status, answer["status"]) == (200, "ignored")
        record = await api.rt.store.load(vid)
        assert record is not None
        assert (record.status.value, record.provider) == ("pending", "simulator")
        status, answer = await send(api, body)  # the same event id, from the provider that was asked
        assert (status, answer["status"]) == (200, "applied"), "de-duplication is per provider"
        assert (await read(api, vid))["status"] == "verified"

    async def test_the_simulator_id_is_unknown_when_the_simulator_is_not_in_use(self, api: Api):
        settings = api.rt.settings
        production = replace(settings, providers=replace(settings.providers, carriers="x", sms="twilio",
                                                         calls="y", pushes="z"))
        assert "simulator" not in webhook_secrets(production, simulator_mounted=False)
        assert webhook_secrets(production, simulator_mounted=True)["simulator"] == SECRET


class TestSimulatorIsTheServicesOnly:
    async def test_an_unsigned_call_request_is_refused(self, api: Api):
        """The attack: POST /sim/provider/ars/call for someone's reference, with the attacker's
        webhook. Unsigned: 401; nothing rings, nothing is reported."""
        vid, call = await ringing_call(api)
        attack = {"reference": call["reference"], "phone": "01099998888", "display_code": "11",
                  "webhook": "http://127.0.0.1:9/steal"}
        status, _ = await sim_post(api, "/provider/ars/call", attack)
        assert status == 401
        status, _ = await sim_post(api, "/provider/ars/call", {**attack, "webhook": None}, secret="guess")
        assert status == 401
        status, calls = await api.call("GET", "/sim/ars/01099998888", key=None)
        assert calls["calls"] == []
        assert (await read(api, vid))["status"] == "pending"

    async def test_a_request_naming_a_webhook_is_refused_even_when_signed(self, api: Api):
        """Reports go only to the webhook the simulator was configured with."""
        body = {"reference": f"{uuid.uuid4().hex}:1", "phone": "01099998888", "display_code": "11",
                "webhook": "http://127.0.0.1:9/steal"}
        status, _ = await sim_post(api, "/provider/ars/call", body, secret=SECRET)
        assert status == 400

    @pytest.mark.parametrize("path", ["/provider/sms", "/provider/subscriber", "/provider/addons",
                                      "/provider/pass/push"])
    async def test_every_provider_route_wants_the_services_signature(self, api: Api, path):
        status, _ = await sim_post(api, path, {"reference": "x:1", "phone": PHONE, "text": "[1]"})
        assert status == 401

    @pytest.mark.parametrize(("channel", "action", "body"), [
        ("ars", "keypad", {"digits": "12"}), ("pass", "approve", {}), ("pass", "deny", {})])
    async def test_no_report_about_a_reference_the_service_never_sent(self, api: Api, channel, action, body):
        """Keypad, approve and deny for a phone the service sent nothing to: 409, nothing signed."""
        status, answer = await api.call("POST", f"/sim/{channel}/01077776666/{action}", body, key=None)
        assert status == 409
        assert answer["retry"] is True

    async def test_the_simulator_reports_to_its_configured_webhook_only(self, api: Api):
        """A keypad reports to the configured URL; the request carried none."""
        vid, call = await ringing_call(api)
        status, answer = await api.call("POST", f"/sim/ars/{PHONE}/keypad", {"digits": call["display_code"]},
                                        key=None)
        assert (status, answer["webhook_status"]) == (200, 200)
        assert (await read(api, vid))["status"] == "verified"
        assert api.app[SIMULATOR].phone_apps.webhook == api.base + HOOK
