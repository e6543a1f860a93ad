"""The OpenAPI 3.1 document, generated from the routes the application really has and the
definitions in `service.api.schemas` that validate their requests.

Every `/v1` route must have an entry in OPERATIONS: a route without one fails the build of the
document (and its test), so the document cannot silently fall behind the code. Each entry names
its request and answer definitions and every status the route can answer with; the statuses
every route shares (400, 401, 503, the Idempotency-Key's 409s) are added here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.api import schemas

ERROR = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"description": "whole seconds until the request may succeed (the longest wait)",
               "schema": {"type": "integer", "minimum": 0}}
PATH_PARAMETERS = {
    "id": ({"type": "string", "pattern": schemas.VERIFICATION_ID, "examples": ["0a1b2c3d4e5f60718293a4b5c6d7"]},
           "the verification's id (28 lowercase hex digits); any other id is unknown (404)"),
    "user_id": ({"type": "string", "maxLength": schemas.MAX_TEXT, "pattern": schemas.NON_BLANK,
                 "examples": ["trainee-1"]}, "the mOTP user's id, as registered"),
    "provider": ({"type": "string", "pattern": schemas.PROVIDER_ID, "examples": ["simulator"]},
                 "the provider's id; an unknown one is refused like a bad signature (401)"),
}
PARAMETER = re.compile(r"\{([^}]+)\}")

# Start bodies that are valid requests: the README's, one per channel.
SUBJECT_EXAMPLE = {"name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": "010-1234-5678",
                   "carrier": "SKT"}
START_EXAMPLES = {
    "sms": {"value": {"channel": "sms", "tx_id": "order-1001", "subject": SUBJECT_EXAMPLE}},
    "ars": {"value": {"channel": "ars", "subject": SUBJECT_EXAMPLE}},
    "pass": {"value": {"channel": "pass", "subject": SUBJECT_EXAMPLE,
                       "callback_url": "https://merchant.example.com/veriflow", "end_user_ip": "203.0.113.7"}},
    "motp": {"value": {"channel": "motp", "motp_user_id": "trainee-1",
                       "subject": {"name": "홍길동", "phone": "010-1234-5678"}}},
}


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    ok: int
    answer: str  # a definition of service.api.schemas
    errors: dict[int, str]  # status -> the codes it carries, besides the shared ones
    body: str | None = None
    body_required: bool = True
    auth: bool = True
    store: bool = True  # reads or writes the store: 503 9999 with Retry-After while it is away
    retry_after: frozenset[int] = frozenset()  # statuses that always carry Retry-After
    parameters: tuple[dict[str, Any], ...] = ()
    examples: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)


def _link(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"id": "$response.body#/id"}}


VERIFICATION_LINKS = {
    "read": _link("getVerification"), "confirm": _link("confirmVerification"),
    "resend": _link("resendVerification"), "cancel": _link("cancelVerification"),
    "fallback": _link("fallbackVerification"), "events": _link("verificationEvents"),
}
ENDED = "the code that ended a failed verification (422, 429, 502)"
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/verifications"): Operation(
        "Start a verification", 201, "Verification",
        {409: "4007 tx_id in use", 422: "2910/4016 refused by the carrier, PASS 67xx, AP005 unknown mOTP user",
         423: "AP902 the mOTP user is locked", 429: "3006 over an abuse limit (nothing sent or created)"},
        body="StartBody", retry_after=frozenset({429}), examples=START_EXAMPLES, links=VERIFICATION_LINKS),
    ("GET", "/v1/verifications/{id}"): Operation(
        "Read a verification, in any status, until record_ttl_s after it ended", 200, "Verification",
        {404: "4001 unknown"}),
    ("POST", "/v1/verifications/{id}/confirm"): Operation(
        "SMS, mOTP: submit the code; ARS, PASS: ask whether the user has finished", 200, "Verification",
        {404: "4018 unknown, expired or canceled",
         409: "4018 already verified, 4150 completed, ARS 4500 no result yet, PASS 6702 not approved yet",
         422: f"4013 wrong code, 4022/4023 carrier add-on pending, AP901 mOTP mismatch; {ENDED}",
         423: "AP902 the 5th wrong mOTP code locked the user", 429: "4301 too many wrong codes",
         502: ENDED},
        body="Confirm", body_required=False),
    ("POST", "/v1/verifications/{id}/resend"): Operation(
        "Send a new code (replaces the old one); ARS: a new call with new digits; PASS: a new push", 200,
        "Verification",
        {404: "4003 unknown, expired or canceled",
         409: "4150 no longer pending, ARS 4501 call in progress, 4502 after a successful call, PASS 6702",
         422: ENDED, 429: "4302 too many resends, 3006 over an abuse limit (Retry-After)", 502: ENDED}),
    ("POST", "/v1/verifications/{id}/cancel"): Operation(
        "Cancel a verification", 200, "Verification",
        {404: "4001 unknown", 409: "4150 already terminal"}),
    ("POST", "/v1/verifications/{id}/fallback"): Operation(
        "Turn a failed verification that lists the channel in `fallback` into that channel's flow", 200,
        "Verification",
        {404: "4001 unknown", 409: "3005 fallback to that channel not offered, 4007 tx_id in use",
         422: "2910/4016 refused by the carrier", 429: "3006 over an abuse limit"},
        body="Fallback", retry_after=frozenset({429})),
    ("GET", "/v1/verifications/{id}/events"): Operation(
        "The verification's audit trail, oldest first (no personal data)", 200, "Events",
        {404: "4001 unknown"}),
    ("POST", "/v1/results"): Operation(
        "Redeem a key token once for the verified person's data", 200, "Result",
        {409: "4000 unknown, used or expired token"}, body="KeyToken"),
    ("GET", "/v1/catalog"): Operation("The code catalog", 200, "CatalogBody", {}, auth=False, store=False),
    ("POST", "/v1/providers/{provider}/events"): Operation(
        "A provider reports an ARS call or PASS push outcome (signed, X-Veriflow-Signature)", 200, "Ack",
        {401: "3004 missing, wrong or stale signature, or an unknown provider"}, body="ProviderEvent",
        auth=False,
        parameters=({"name": "X-Veriflow-Signature", "in": "header", "required": True,
                     "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + body>",
                     "schema": {"type": "string", "examples": ["t=1700000000,v1=<hex>"]}},)),
    ("POST", "/v1/motp/users"): Operation(
        "Register an mOTP user's device (registering again replaces it)", 201, "MotpEnrolment",
        {423: "AP011 the user is locked"}, body="MotpEnrol",
        examples={"enrol": {"value": {"user_id": "trainee-1", "name": "홍길동", "phone": "010-1234-5678"}}}),
    ("GET", "/v1/motp/users/{user_id}"): Operation(
        "Read an mOTP user", 200, "MotpUser", {404: "AP005 unknown user"}),
    ("POST", "/v1/motp/users/{user_id}/unlock"): Operation(
        "Reset the limit with the key token of a verified SMS/ARS/PASS verification of the same person", 200,
        "MotpUser", {404: "AP005 unknown user", 409: "4000 unknown, used or expired token",
                     422: "AP005 the token's person is not the user"}, body="KeyToken"),
    ("GET", "/v1/console/summary"): Operation(
        "Console: the client's live verifications by channel and state, outcomes of the last hour by code",
        200, "ConsoleSummary", {}),
    ("GET", "/v1/console/verifications"): Operation(
        "Console: the client's verifications by id or tx_id, with their timelines and state diagrams",
        200, "ConsoleSearch", {400: "3001 q missing or too long"},
        parameters=({"name": "q", "in": "query", "required": True, "description": "a verification id or tx_id",
                     "schema": {"type": "string", "maxLength": schemas.MAX_QUERY, "pattern": schemas.NON_BLANK}},)),
}
OPERATION_IDS = {
    ("POST", "/v1/verifications"): "startVerification",
    ("GET", "/v1/verifications/{id}"): "getVerification",
    ("POST", "/v1/verifications/{id}/confirm"): "confirmVerification",
    ("POST", "/v1/verifications/{id}/resend"): "resendVerification",
    ("POST", "/v1/verifications/{id}/cancel"): "cancelVerification",
    ("POST", "/v1/verifications/{id}/fallback"): "fallbackVerification",
    ("GET", "/v1/verifications/{id}/events"): "verificationEvents",
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "the same key with the same body answers the first response again; another body is 409 3002",
    "schema": {"type": "string", "pattern": schemas.IDEMPOTENCY_KEY, "maxLength": schemas.MAX_IDEMPOTENCY_KEY}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _statuses(method: str, op: Operation) -> dict[int, str]:
    """The route's own statuses, and those every route of its kind shares."""
    shared: dict[int, str] = {400: "3001 invalid request (a field, malformed JSON or HTTP, a bad header)"}
    if op.auth:
        shared[401] = "4101 missing or wrong API key"
    if method == "POST" and op.auth:
        shared[409] = "3002 Idempotency-Key reused with another body, 3003 its first request still runs"
    if op.store:
        shared[503] = "9999 the store or an upstream cannot answer now (Retry-After)"
    found = dict(shared)
    for status, text in op.errors.items():
        found[status] = f"{text}; {shared[status]}" if status in shared and status != 401 else text  # noqa: PLR2004
    return dict(sorted(found.items()))


def _responses(method: str, op: Operation, refs: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {str(op.ok): {"description": "success", **_json(refs[op.answer])}}
    if op.links:
        responses[str(op.ok)]["links"] = op.links
    for status, text in _statuses(method, op).items():
        answer: dict[str, Any] = {"description": text, **_json(ERROR)}
        if status == 503 or status in op.retry_after:  # noqa: PLR2004
            answer["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
        elif status == 429:  # noqa: PLR2004 - 3006 carries it, the caps (4301, 4302) do not
            answer["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(status)] = answer
    return responses


def _operation(method: str, path: str, op: Operation, refs: dict[str, Any]) -> dict[str, Any]:
    responses = _responses(method, op, refs)
    parameters = [
        {"name": name, "in": "path", "required": True, "description": PATH_PARAMETERS[name][1],
         "schema": PATH_PARAMETERS[name][0]}
        for name in PARAMETER.findall(path)
    ]
    parameters += list(op.parameters)
    if method == "POST" and op.auth:
        parameters.append(IDEMPOTENCY_KEY)
    operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if (method, path) in OPERATION_IDS:
        operation["operationId"] = OPERATION_IDS[(method, path)]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        media: dict[str, Any] = {"schema": refs[op.body]}
        if op.examples:
            media["examples"] = op.examples
        operation["requestBody"] = {"required": op.body_required, "content": {"application/json": media}}
    if not op.auth:
        operation["security"] = []
    return operation


def v1_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if info.startswith("/v1") and route.method != "HEAD":
            found.add((route.method, info))
    return found


def openapi_document(app: web.Application) -> dict[str, Any]:
    refs, components = schemas.components()
    components["StartBody"] = refs["StartBody"]  # the tagged union of the four channels' starts
    refs["StartBody"] = {"$ref": "#/components/schemas/StartBody"}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(v1_routes(app)):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, OPERATIONS[(method, path)], refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "veriflow", "version": "1.0.0",
                 "description": "Phone identity verification: start, confirm, redeem."},
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": components,
        },
    }
