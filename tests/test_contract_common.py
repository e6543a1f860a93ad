"""Acceptance tests of the contract's public routes: catalog, health, metrics, OpenAPI (API.md §1)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

ENTRY_FIELDS = {"code", "http_status", "retryable", "channels", "messages", "description", "detail_codes",
                "service_defined"}
CHANNELS = {"sms", "ars", "pass", "motp"}
SMS_ROUTES = {
    ("POST", "/v1/verifications"),
    ("GET", "/v1/verifications/{id}"),
    ("POST", "/v1/verifications/{id}/confirm"),
    ("POST", "/v1/verifications/{id}/resend"),
    ("POST", "/v1/verifications/{id}/cancel"),
    ("POST", "/v1/results"),
    ("GET", "/v1/catalog"),
}


async def catalog(api: Api) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/v1/catalog", key=None)
    assert status == 200
    assert set(body) == {"codes"}
    return list(body["codes"])


def openapi_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in {"get", "post", "put", "patch", "delete"}}


class TestCatalog:
    async def test_catalog_is_public(self, api: Api):
        """§1/§2: GET /v1/catalog needs no API key (a wrong key does not matter either)."""
        status, body = await api.call("GET", "/v1/catalog", key=None)
        assert status == 200
        status, with_bad_key = await api.call("GET", "/v1/catalog", key="not-a-key")
        assert (status, with_bad_key) == (200, body)

    async def test_every_entry_has_the_documented_shape(self, api: Api):
        """§1: each entry has code, http_status, retryable, channels, messages{ko,en}, description,
        detail_codes, service_defined."""
        for entry in await catalog(api):
            assert set(entry) >= ENTRY_FIELDS, entry
            assert isinstance(entry["code"], str)
            assert isinstance(entry["http_status"], int)
            assert isinstance(entry["retryable"], bool)
            assert set(entry["channels"]) <= CHANNELS
            assert entry["channels"]
            assert {"ko", "en"} <= set(entry["messages"])
            assert all(isinstance(text, str) and text for text in entry["messages"].values())
            assert isinstance(entry["description"], str)
            assert isinstance(entry["detail_codes"], dict)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry["detail_codes"].items())
            assert isinstance(entry["service_defined"], bool)

    async def test_2910_has_two_entries(self, api: Api):
        """§1: one entry per row of the source catalog, so 2910 (listed twice there) has two."""
        rows = [entry for entry in await catalog(api) if entry["code"] == "2910"]
        assert len(rows) == 2
        assert all(row["service_defined"] is False for row in rows)
        assert all("sms" in row["channels"] for row in rows)
        assert rows[0]["messages"] != rows[1]["messages"]

    async def test_sms_codes_of_the_contract_are_listed(self, api: Api):
        """§4/§7: every code the contract names for SMS and the common routes is in the catalog."""
        codes = {entry["code"]: entry for entry in await catalog(api)}
        named = {"2910": 422, "3001": 400, "4000": 409, "4001": 404, "4003": 404, "4007": 409,
                 "4013": 422, "4016": 422, "4018": None, "4022": 422, "4023": 422, "4101": 401,
                 "4150": 409, "4301": 429, "4302": 429}
        for code, http_status in named.items():
            assert code in codes, code
            assert codes[code]["service_defined"] is False, code
            if http_status is not None:
                assert codes[code]["http_status"] == http_status, code


class TestHealth:
    async def test_healthz(self, api: Api):
        """§1: GET /healthz, without an API key, says the process is alive."""
        async with api.session.get(api.base + "/healthz") as resp:
            assert resp.status == 200

    async def test_readyz_when_the_store_answers(self, api: Api):
        """§1: GET /readyz is 200 when the store answers."""
        async with api.session.get(api.base + "/readyz") as resp:
            assert resp.status == 200

    async def test_metrics_are_prometheus_text_with_veriflow_names(self, api: Api):
        """§1: GET /metrics is Prometheus text; the service's own metric names start with veriflow_."""
        await api.start("01012340001")
        async with api.session.get(api.base + "/metrics") as resp:
            assert resp.status == 200
            assert resp.content_type.startswith("text/plain")
            text = await resp.text()
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
        own = {name for name in names if name.startswith("veriflow_")}
        assert own, names
        assert all(name.startswith(("veriflow_", "python_", "process_")) for name in names), names


class TestOpenApi:
    async def test_openapi_document_lists_the_v1_routes(self, api: Api):
        """§1: GET /openapi.json (no key) is an OpenAPI 3 document describing the /v1 routes."""
        async with api.session.get(api.base + "/openapi.json") as resp:
            assert resp.status == 200
            document = await resp.json(content_type=None)
        assert str(document["openapi"]).startswith("3.")
        assert "info" in document
        assert openapi_routes(document) >= SMS_ROUTES

    async def test_openapi_is_truthful(self, api: Api):
        """§1: OpenAPI describes every /v1 route the service has, and only those."""
        async with api.session.get(api.base + "/openapi.json") as resp:
            document = await resp.json(content_type=None)
        served = set()
        for route in api.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if path.startswith("/v1") and route.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                served.add((route.method, path))
        assert openapi_routes(document) == served


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/catalog"])
async def test_public_routes_need_no_key(api: Api, path: str):
    """§1: health and documentation routes answer without an API key."""
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 200
