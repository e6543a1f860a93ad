"""The OpenAPI document is generated from the definitions that validate requests, and says what
the server does: path parameters, limits, every status with the envelope, Retry-After, valid
examples (the README's bodies too)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from service.api import schemas
from tests.conftest import Api

README = Path(__file__).resolve().parent.parent / "README.md"
ERROR = {"$ref": "#/components/schemas/Error"}


async def document(api: Api) -> dict[str, Any]:
    status, doc = await api.call("GET", "/openapi.json", key=None)
    assert status == 200
    return dict(doc)


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]},
                                           format_checker=jsonschema.FormatChecker())


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


async def test_every_path_parameter_is_defined(api: Api):
    doc = await document(api)
    for _, path, op in operations(doc):
        named = set(re.findall(r"\{([^}]+)\}", path))
        defined = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert named == defined, path
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["required"] is True
                assert parameter["schema"].get("pattern"), (path, parameter)
    ids = [p for p in doc["paths"]["/v1/verifications/{id}"]["get"]["parameters"] if p["name"] == "id"]
    assert ids[0]["schema"]["pattern"] == "^[0-9a-f]{28}$"


async def test_every_status_carries_the_envelope_and_authenticated_routes_answer_400_and_401(api: Api):
    doc = await document(api)
    for method, path, op in operations(doc):
        responses = op["responses"]
        for status, answer in responses.items():
            if int(status) >= 400:
                assert answer["content"]["application/json"]["schema"] == ERROR, (method, path, status)
        if op.get("security") != []:
            assert {"400", "401", "503"} <= set(responses), (method, path)
        if "503" in responses:
            assert responses["503"]["headers"]["Retry-After"]["required"] is True
    for path in ("/v1/verifications", "/v1/verifications/{id}/resend", "/v1/verifications/{id}/fallback"):
        assert "Retry-After" in doc["paths"][path]["post"]["responses"]["429"]["headers"]


async def test_requests_publish_the_limits_the_server_enforces(api: Api):
    doc = await document(api)
    components = doc["components"]["schemas"]
    sms = components["SmsStart"]
    assert set(sms["required"]) == {"channel", "subject"}
    assert set(components["Subject"]["required"]) == {"name", "birth", "gender_digit", "phone", "carrier"}
    assert components["Subject"]["properties"]["name"]["maxLength"] == schemas.MAX_TEXT
    assert components["MotpSubject"]["required"] == ["name", "phone"]
    assert set(components["MotpStart"]["required"]) == {"channel", "motp_user_id", "subject"}
    assert components["KeyToken"]["properties"]["key_token"]["maxLength"] == schemas.MAX_TOKEN


def readme_bodies(route: str) -> list[dict[str, Any]]:
    """The JSON bodies the README's curl examples send to `route`."""
    pattern = r"curl -s -X POST [^\n]*" + re.escape(route) + r" [^\n]*\\\n\s*-d '([^']+)'"
    return [json.loads(body) for body in re.findall(pattern, README.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(("route", "component"), [("/v1/verifications", "StartBody"), ("/v1/motp/users", "MotpEnrol")])
async def test_the_readme_bodies_and_the_examples_are_valid_requests(api: Api, route: str, component: str):
    doc = await document(api)
    check = validator(doc, {"$ref": f"#/components/schemas/{component}"})
    bodies = readme_bodies(route)
    assert bodies, route
    media = doc["paths"][route]["post"]["requestBody"]["content"]["application/json"]
    bodies += [example["value"] for example in media.get("examples", {}).values()]
    for body in bodies:
        check.validate(body)
    if route == "/v1/motp/users":  # and the server accepts them: enrol, then start
        status, _ = await api.call("POST", route, bodies[0])
        assert status == 201
    else:
        for body in bodies:
            if body["channel"] == "motp":
                enrol = {"user_id": body["motp_user_id"], **body["subject"]}
                assert (await api.call("POST", "/v1/motp/users", enrol))[0] == 201
            status, answer = await api.call("POST", route, {**body, "callback_url": None}
                                            if "callback_url" in body else body)
            assert status == 201, (body, answer)


@pytest.mark.parametrize("body", [
    {"channel": "sms", "subject": {"name": "a", "birth": "20010101", "gender_digit": "1", "phone": "01012345678",
                                   "carrier": "SKT"}},
    {"channel": "sms", "subject": {"name": "a", "birth": "19900101", "gender_digit": "1",
                                   "phone": "01012345678\n", "carrier": "SKT"}},
    {"channel": "sms", "subject": {"name": "a", "birth": "19900101", "gender_digit": "1", "phone": "\uff101012345678",
                                   "carrier": "SKT"}},
    {"channel": "sms", "subject": {"name": "a", "birth": "19900230", "gender_digit": "1", "phone": "01012345678",
                                   "carrier": "SKT"}},
    {"channel": "motp", "subject": {"name": "a", "phone": "01012345678"}},
])
async def test_what_the_document_refuses_the_server_refuses(api: Api, body: dict[str, Any]):
    doc = await document(api)
    if not any(str(value).endswith("\n") for value in body["subject"].values()):
        # (An ECMA validator refuses the trailing newline too; Python's `$`, used by this one, does not.)
        assert not validator(doc, {"$ref": "#/components/schemas/StartBody"}).is_valid(body)
    status, answer = await api.call("POST", "/v1/verifications", body)
    assert (status, answer["error"]["code"]) == (400, "3001")
