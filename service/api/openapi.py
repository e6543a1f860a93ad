"""The OpenAPI 3 document, built from the routes the application really has.

Every `/v1` route must have an entry in OPERATIONS: a route without one fails the build of
the document (and its test), so the document cannot silently fall behind the code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

VERIFICATION = {"$ref": "#/components/schemas/Verification"}
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: int, ok_schema: dict[str, Any], errors: dict[int, str],
        body: dict[str, Any] | None = None, *, auth: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": "success", **_json(ok_schema)}}
    for status, text in errors.items():
        responses[str(status)] = {"description": text, **_json(ERROR)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if not auth:
        operation["security"] = []
    return operation


SUBJECT = {
    "type": "object",
    "required": ["name", "birth", "gender_digit", "phone", "carrier"],
    "properties": {
        "name": {"type": "string"}, "birth": {"type": "string", "example": "19900101"},
        "gender_digit": {"type": "string", "example": "1"},
        "phone": {"type": "string", "example": "010-1234-5678"},
        "carrier": {"type": "string", "enum": ["SKT", "KT", "LGT"]}, "is_mvno": {"type": "boolean"},
    },
}
START = {
    "type": "object", "required": ["channel", "subject"],
    "properties": {
        "channel": {"type": "string", "enum": ["sms", "ars", "pass"]}, "tx_id": {"type": "string"},
        "subject": SUBJECT, "service_name": {"type": "string"},
        "callback_url": {"type": "string", "format": "uri"},
    },
}
CODE = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}
TOKEN = {"type": "object", "required": ["key_token"], "properties": {"key_token": {"type": "string"}}}
RESULT = {"type": "object", "properties": {"result": {"type": "object", "properties": {
    name: {"type": "string"} for name in
    ("name", "birth", "gender_digit", "phone", "carrier", "channel", "verified_at")}}}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/verifications"): _op(
        "Start a verification", 201, VERIFICATION,
        {400: "3001 invalid request", 401: "4101 bad API key", 409: "4007 tx_id in use",
         422: "2910/4016 refused by the carrier"}, START),
    ("GET", "/v1/verifications/{id}"): _op(
        "Read a verification", 200, VERIFICATION, {404: "4001 unknown"}),
    ("POST", "/v1/verifications/{id}/confirm"): _op(
        "Submit the code the user received", 200, VERIFICATION,
        {404: "4018 unknown, expired or canceled", 409: "4018 verified / 4150 completed",
         422: "4013 wrong code, 4022/4023 carrier add-on pending", 429: "4301 too many attempts"}, CODE),
    ("POST", "/v1/verifications/{id}/resend"): _op(
        "Send a new code (replaces the old one)", 200, VERIFICATION,
        {404: "4003 unknown", 409: "4150 no longer pending", 429: "4302 too many resends"}),
    ("POST", "/v1/verifications/{id}/cancel"): _op(
        "Cancel a verification", 200, VERIFICATION, {404: "4001 unknown", 409: "4150 already terminal"}),
    ("POST", "/v1/results"): _op(
        "Redeem a key token once for the verified person's data", 200, RESULT,
        {409: "4000 unknown, used or expired token"}, TOKEN),
    ("GET", "/v1/catalog"): _op(
        "The code catalog", 200, {"type": "object"}, {}, auth=False),
}

# ---- mOTP ----

START["properties"]["channel"]["enum"].append("motp")  # type: ignore[index]
START["properties"]["motp_user_id"] = {  # type: ignore[index]
    "type": "string", "description": "mOTP: the registered user; the subject needs only name and phone"}
OPERATIONS[("POST", "/v1/verifications")]["responses"]["422"]["description"] += ", AP005 unknown mOTP user"
OPERATIONS[("POST", "/v1/verifications")]["responses"]["423"] = {
    "description": "AP902 mOTP user locked", **_json(ERROR)}
OPERATIONS[("POST", "/v1/verifications/{id}/confirm")]["responses"]["422"]["description"] += ", AP901 mOTP mismatch"
OPERATIONS[("POST", "/v1/verifications/{id}/confirm")]["responses"]["423"] = {
    "description": "AP902 the 5th wrong mOTP code locked the user", **_json(ERROR)}
MOTP_USER = {"type": "object", "properties": {
    "user_id": {"type": "string"}, "status": {"type": "string", "enum": ["registered", "locked"]},
    "failures": {"type": "integer"}}}
MOTP_ENROLMENT = {"type": "object", "properties": {
    **MOTP_USER["properties"], "otpauth_uri": {"type": "string", "example": (  # type: ignore[dict-item]
        "otpauth://totp/veriflow:trainee-1?secret=…&issuer=veriflow&algorithm=SHA1&digits=6&period=60")},
    "qr_svg": {"type": "string", "description": (
        "the same URI as a QR code (SVG) for the authenticator app; shown once, in this answer only")}}}
MOTP_ENROL = {"type": "object", "required": ["user_id", "name", "phone"], "properties": {
    "user_id": {"type": "string"}, "name": {"type": "string"}, "phone": {"type": "string"}}}
OPERATIONS.update({
    ("POST", "/v1/motp/users"): _op(
        "Register an mOTP user's device (registering again replaces it)", 201, MOTP_ENROLMENT,
        {400: "3001 invalid request", 423: "AP011 the user is locked"}, MOTP_ENROL),
    ("GET", "/v1/motp/users/{user_id}"): _op(
        "Read an mOTP user", 200, MOTP_USER, {404: "AP005 unknown user"}),
    ("POST", "/v1/motp/users/{user_id}/unlock"): _op(
        "Reset the limit with the key token of a verified SMS/ARS/PASS verification of the same person",
        200, MOTP_USER, {404: "AP005 unknown user", 409: "4000 unknown, used or expired token",
                         422: "AP005 the token's person is not the user"}, TOKEN),
})

# ---- ARS, PASS, provider webhooks and channel fallback ----
PROVIDER_EVENT = {
    "type": "object", "required": ["event_id", "type", "reference", "code"],
    "properties": {
        "event_id": {"type": "string"}, "reference": {"type": "string", "example": "<verification id>:1"},
        "type": {"type": "string", "enum": ["ars.call_result", "pass.push_result"]},
        "code": {"type": "string", "example": "2000"}, "detail_code": {"type": ["string", "null"]},
    },
}
ACK = {"type": "object", "properties": {
    "status": {"type": "string", "enum": ["applied", "ignored", "duplicate"]}, "event_id": {"type": "string"}}}
FALLBACK = {"type": "object", "required": ["channel"], "properties": {"channel": {"type": "string", "enum": ["sms"]}}}
OPERATIONS.update({
    ("POST", "/v1/providers/{provider}/events"): {
        **_op("A provider reports an ARS call or PASS push outcome (signed, X-Veriflow-Signature)", 200, ACK,
              {400: "3001 malformed event", 401: "3004 missing, wrong or stale signature"}, PROVIDER_EVENT,
              auth=False),
        "parameters": [{"name": "X-Veriflow-Signature", "in": "header", "required": True,
                        "schema": {"type": "string", "example": "t=1700000000,v1=<hex>"}}],
    },
    ("POST", "/v1/verifications/{id}/fallback"): _op(
        "Turn a failed verification that lists the channel in `fallback` into that channel's flow", 200,
        VERIFICATION, {404: "4001 unknown", 409: "3005 fallback to that channel not offered / 4007 tx_id in use",
                       422: "2910/4016 refused by the carrier"}, FALLBACK),
})
# ---- the audit trail and the operator console ----
NULLABLE = {"type": ["string", "null"]}
AUDIT_EVENT = {"type": "object", "required": ["at", "from", "to", "trigger", "actor", "code", "detail_code"],
               "properties": {
                   "at": {"type": "string", "format": "date-time"},
                   "from": {**NULLABLE, "description": "the machine state before; null for the creation"},
                   "to": {"type": "string"}, "trigger": {"type": "string", "example": "confirm"},
                   "actor": {"type": "string", "example": "client",
                             "description": "client, provider:<id> or timer (an expiry is always the timer's)"},
                   "code": NULLABLE, "detail_code": NULLABLE}}
EVENTS = {"type": "object", "required": ["events"],
          "properties": {"events": {"type": "array", "items": AUDIT_EVENT}}}
COUNTED = {"type": "integer", "minimum": 1}
CONSOLE_SUMMARY = {"type": "object", "properties": {
    "client_id": {"type": "string"},
    "live": {"type": "object", "properties": {"total": {"type": "integer"}, "by_state": {"type": "array", "items": {
        "type": "object", "properties": {"channel": {"type": "string"}, "state": {"type": "string"},
                                         "status": {"type": "string"}, "count": COUNTED}}}}},
    "outcomes": {"type": "object", "properties": {
        "since": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"},
        "by_code": {"type": "array", "items": {"type": "object", "properties": {
            "channel": {"type": "string"}, "status": {"type": "string"}, "code": NULLABLE, "count": COUNTED,
            "messages": {"type": ["object", "null"], "properties": {
                "ko": {"type": "string"}, "en": {"type": "string"}}}}}}}}}}
CONSOLE_SEARCH = {"type": "object", "properties": {"query": {"type": "string"}, "results": {"type": "array", "items": {
    "type": "object", "properties": {
        "verification": VERIFICATION, "events": {"type": "array", "items": AUDIT_EVENT},
        "diagram": {"type": "object", "properties": {
            "channel": {"type": "string"}, "mermaid": {"type": "string"},
            "visited": {"type": "array", "items": {"type": "string"}},
            "path": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}}}}}}}
OPERATIONS.update({
    ("GET", "/v1/verifications/{id}/events"): _op(
        "The verification's audit trail, oldest first (no personal data)", 200, EVENTS,
        {401: "4101 bad API key", 404: "4001 unknown"}),
    ("GET", "/v1/console/summary"): _op(
        "Console: the client's live verifications by channel and state, outcomes of the last hour by code",
        200, CONSOLE_SUMMARY, {401: "4101 bad API key"}),
    ("GET", "/v1/console/verifications"): {
        **_op("Console: the client's verifications by id or tx_id, with their timelines and state diagrams",
              200, CONSOLE_SEARCH, {400: "3001 q missing or too long", 401: "4101 bad API key"}),
        "parameters": [{"name": "q", "in": "query", "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128}}],
    },
})
CONFIRM_CODELESS = {"description": "SMS: the code; ARS and PASS: an empty object (asks whether the user has finished)",
                    "oneOf": [CODE, {"type": "object"}]}
OPERATIONS[("POST", "/v1/verifications/{id}/confirm")]["requestBody"] = {"required": False, **_json(CONFIRM_CODELESS)}
OPERATIONS[("POST", "/v1/verifications/{id}/confirm")]["responses"]["409"]["description"] += (
    ", ARS 4500 no result yet, PASS 6702 not approved yet")
OPERATIONS[("POST", "/v1/verifications/{id}/resend")]["summary"] += "; ARS: a new call with new digits; PASS: a new push"
OPERATIONS[("POST", "/v1/verifications/{id}/resend")]["responses"]["409"]["description"] += (
    ", ARS 4501 call in progress, 4502 after a successful call, PASS 6702 push waiting")

# ---- abuse limits (contract section 9) ----

START["properties"]["end_user_ip"] = {  # type: ignore[index]
    "type": "string", "example": "203.0.113.7",
    "description": "the end user's IP address (IPv4 or IPv6), counted by the per_ip limit; otherwise 400 3001"}
RETRY_AFTER = {"Retry-After": {"description": "whole seconds until the request would be allowed (the longest wait)",
                               "schema": {"type": "integer", "minimum": 1}}}
RATE_LIMITED = "3006 over an abuse limit (nothing sent, created or spent; retry after Retry-After seconds)"
for _route in ("/v1/verifications", "/v1/verifications/{id}/resend", "/v1/verifications/{id}/fallback"):
    _responses = OPERATIONS[("POST", _route)]["responses"]
    _earlier = _responses.get("429")
    _responses["429"] = {"description": RATE_LIMITED + (", " + _earlier["description"] if _earlier else ""),
                         "headers": RETRY_AFTER, **_json(ERROR)}

SCHEMAS = {
    "Verification": {"type": "object", "properties": {
        "id": {"type": "string"}, "channel": {"type": "string"}, "tx_id": {"type": ["string", "null"]},
        "status": {"type": "string",
                   "enum": ["pending", "verified", "completed", "failed", "expired", "canceled"]},
        "state": {"type": "string"}, "last_code": {"type": ["string", "null"]},
        "last_detail_code": {"type": ["string", "null"]},
        "last_variant": {"type": "string", "description": (
            "only when last_code has several catalog rows: the row's variant (2910: code_mismatch)")},
        "attempts_left": {"type": ["integer", "null"]}, "resends_left": {"type": ["integer", "null"]},
        "fallback": {"type": "array", "items": {"type": "string"}},
        "key_token": {"type": "string"},
        "display_code": {"type": "string", "description": "ARS only: the digits the user keys into the call"},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"}}},
    "Error": {"type": "object", "properties": {
        "error": {"type": "object", "properties": {
            "code": {"type": "string"}, "detail_code": {"type": ["string", "null"]},
            "message": {"type": "string"}, "description": {"type": "string"},
            "retryable": {"type": "boolean"},
            "veriflow_code": {"type": "string", "description": (
                "only for a client with a second error dialect: veriflow's own code, `code` being "
                "the dialect's where it has one")}}},
        "verification": VERIFICATION}},
}


def v1_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if info.startswith("/v1") and route.method != "HEAD":
            found.add((route.method, info))
    return found


def openapi_document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(v1_routes(app)):
        paths.setdefault(path, {})[method.lower()] = OPERATIONS[(method, path)]
    return {
        "openapi": "3.1.0",
        "info": {"title": "veriflow", "version": "1.0.0",
                 "description": "Phone identity verification: start, confirm, redeem."},
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
