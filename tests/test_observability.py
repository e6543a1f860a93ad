"""Logs, metrics, health and the OpenAPI document."""

from __future__ import annotations

import io
import json

import structlog
from prometheus_client.parser import text_string_to_metric_families

from service.api.openapi import OPERATIONS, v1_routes
from service.logging import configure, mask_personal_data
from tests.conftest import Api


class TestLogs:
    def test_personal_data_and_codes_are_masked(self):
        """Whatever a call site passes, names, birth dates, codes and subjects are masked."""
        event = mask_personal_data(None, "info", {
            "event": "x", "phone": "01012345678", "name": "홍길동", "birth": "19900101",
            "code": "123456", "subject": {"name": "홍길동", "phone": "01012345678"},
            "verification_id": "abc", "last_code": "4013",
        })
        assert event["phone"] == "***5678"
        assert event["name"] == event["birth"] == event["code"] == "***"
        assert event["subject"] == {"name": "***", "phone": "***5678"}
        assert (event["verification_id"], event["last_code"]) == ("abc", "4013")

    async def test_every_line_of_a_request_carries_the_verification_id(self, api: Api):
        """JSON lines, each with the verification id; no phone number or name in clear."""
        stream = io.StringIO()
        configure(stream=stream)
        try:
            started = await api.start("01024681357")
            await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": "000000"})
            await api.call("POST", f"/v1/verifications/{started['id']}/cancel")
            await api.rt.dispatcher.read_once(block_ms=1)  # logs the superseded SMS
            output = stream.getvalue()
        finally:
            structlog.reset_defaults()
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        ours = [line for line in lines if line.get("event", "").startswith(("verification", "outbox"))]
        assert ours, output
        assert all(line["verification_id"] == started["id"] for line in ours)
        assert "01024681357" not in output
        assert "홍길동" not in output


class TestEndpoints:
    async def test_health_and_readiness(self, api: Api):
        """/healthz answers; /readyz answers 200 when the store does."""
        assert (await api.call("GET", "/healthz", key=None))[0] == 200
        status, body = await api.call("GET", "/readyz", key=None)
        assert (status, body["status"]) == (200, "ready")

    async def test_metrics_count_outcomes_by_code_and_channel(self, api: Api):
        """veriflow_ metrics: outcomes by channel/status/code, replies, latency, live gauge."""
        started = await api.start()
        for _ in range(3):
            await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {"code": "000000"})
        await api.start("01011110000")
        async with api.session.get(api.base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("veriflow_outcomes_total",
                        (("channel", "sms"), ("code", "4301"), ("status", "failed")))] == 1
        assert samples[("veriflow_replies_total", (("channel", "sms"), ("code", "4013")))] == 2
        assert samples[("veriflow_live_verifications", ())] == 1
        assert any(name == "veriflow_http_request_seconds_count" for name, _ in samples)

    async def test_openapi_describes_exactly_the_v1_routes(self, api: Api):
        """The document lists every /v1 route the application has, and no other."""
        status, doc = await api.call("GET", "/openapi.json", key=None)
        assert status == 200
        assert doc["openapi"].startswith("3.")
        documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
        app_routes = v1_routes(api.app)
        assert documented == app_routes
        assert set(OPERATIONS) == app_routes
