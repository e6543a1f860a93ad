"""A stub of PortOne's V1 REST API for the certification SMS-OTP: getToken, requestOTP and
confirmOTP, as the reference documents them (see service/providers/portone.py).

It checks what the documentation asks: the API key and secret, `Authorization: Bearer <token>`
with a token it issued and has not expired or revoked, JSON bodies, every requestOTP field's
name and type (required: name, phone, birth, gender_digit, carrier in SKT/KT/LGT; optional:
is_mvno boolean, company, merchant_uid, pg strings; anything else is refused), and `otp` on
confirm. A refused body is a 400, an unknown imp_uid a 404, a second confirm a 400, a bad token
a 401, each with a sample from tests/samples/portone.

The documentation gives no answer for a code that does not match; the stub answers it as the
envelope with `code != 0`, at `mismatch_status` (200 unless a test says otherwise).

Knobs: `knobs.delay_s[route]`, `knobs.canned[route]` (routes "token", "request", "confirm"),
`token_lifetime_s`, `revoke_all()` (every token issued so far is answered 401, as an expired
one), `mismatch_status`. `seen` records every request; `otps` the codes it "sent".
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from tests.stubs.server import StubServer

IMP_KEY = "imp_apikey_stub"
IMP_SECRET = "stub-imp-secret-0123456789abcdefghijklmnopqrstuvwxyz"

REQUIRED = ("name", "phone", "birth", "gender_digit", "carrier")
OPTIONAL = {"is_mvno": bool, "company": str, "merchant_uid": str, "pg": str}
CARRIERS = {"SKT", "KT", "LGT"}
NON_DIGITS = re.compile(r"[^0-9]")


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def invalid_request(body: Any) -> str | None:
    """Why a requestOTP body breaks the documented fields (None: it does not)."""
    if not isinstance(body, dict):
        return "not a JSON object"
    unknown = set(body) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for name in REQUIRED:
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} must be a non-empty string"
    for name, kind in OPTIONAL.items():
        if name in body and type(body[name]) is not kind:
            return f"{name} must be a {kind.__name__}"
    problems = {
        "phone": not re.fullmatch(r"01[0-9]{8,9}", NON_DIGITS.sub("", body["phone"])),
        "birth": not re.fullmatch(r"(19|20)[0-9]{6}", NON_DIGITS.sub("", body["birth"])),  # YYYYMMDD
        "gender_digit": not re.fullmatch(r"[0-9]", body["gender_digit"]),
        "carrier": body["carrier"] not in CARRIERS,
    }
    bad = [name for name, wrong in problems.items() if wrong]
    return f"invalid {bad}" if bad else None


class PortOneStub(StubServer):
    provider = "portone"

    def __init__(self) -> None:
        super().__init__()
        self.token_lifetime_s = 1800
        self.tokens: list[str] = []
        self.revoked: set[str] = set()
        self.otps: dict[str, str] = {}
        self.merchant_uids: dict[str, str | None] = {}
        self.certified: set[str] = set()
        self.mismatch_status = 200

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/users/getToken", self.get_token),
            web.post("/certifications/otp/request", self.request_otp),
            web.post("/certifications/otp/confirm/{imp_uid}", self.confirm_otp),
        ]

    def revoke_all(self) -> None:
        self.revoked.update(self.tokens)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and token in self.tokens and token not in self.revoked

    async def get_token(self, request: web.Request) -> web.Response:
        body = _json(await request.read())
        await self.record("token", request, body)
        await self.pause("token")
        if (canned := self.canned("token")) is not None:
            return canned
        if not isinstance(body, dict) or body.get("imp_key") != IMP_KEY or body.get("imp_secret") != IMP_SECRET:
            return self.answer(401, "token_unauthorized")
        token = secrets.token_hex(20)
        self.tokens.append(token)
        now = int(time.time())
        answer = self.answer(200, "token")
        payload = orjson.loads(answer.text or "{}")
        payload["response"].update(access_token=token, now=now, expired_at=now + self.token_lifetime_s)
        return web.json_response(payload)

    async def request_otp(self, request: web.Request) -> web.Response:
        body = _json(await request.read())
        await self.record("request", request, body)
        await self.pause("request")
        if not self._authorized(request):
            return self.answer(401, "unauthorized")
        if (canned := self.canned("request")) is not None:
            return canned
        if request.content_type != "application/json" or invalid_request(body) is not None:
            return self.answer(400, "otp_request_invalid")
        imp_uid = f"imp_{secrets.randbelow(10**12):012d}"
        self.otps[imp_uid] = f"{secrets.randbelow(10**6):06d}"
        self.merchant_uids[imp_uid] = body.get("merchant_uid")
        payload = orjson.loads(self.answer(200, "otp_request").text or "{}")
        payload["response"]["imp_uid"] = imp_uid
        return web.json_response(payload)

    async def confirm_otp(self, request: web.Request) -> web.Response:
        body = _json(await request.read())
        await self.record("confirm", request, body)
        await self.pause("confirm")
        if not self._authorized(request):
            return self.answer(401, "unauthorized")
        if (canned := self.canned("confirm")) is not None:
            return canned
        imp_uid = request.match_info["imp_uid"]
        problem = self._confirm_problem(imp_uid, body)
        if problem is not None:
            return self.answer(*problem)
        self.certified.add(imp_uid)
        payload = orjson.loads(self.answer(200, "otp_confirm").text or "{}")
        payload["response"].update(imp_uid=imp_uid, merchant_uid=self.merchant_uids[imp_uid],
                                   certified_at=int(time.time()))
        return web.json_response(payload)

    def _confirm_problem(self, imp_uid: str, body: Any) -> tuple[int, str] | None:
        """The documented refusal of this confirm (status, sample), or None: certified."""
        if imp_uid not in self.otps:
            return 404, "otp_confirm_not_found"
        if not isinstance(body, dict) or not isinstance(body.get("otp"), str) or not body["otp"]:
            return 400, "otp_confirm_invalid"
        if imp_uid in self.certified:
            return 400, "otp_confirm_already"
        if body["otp"] != self.otps[imp_uid]:
            return self.mismatch_status, "otp_confirm_mismatch"
        return None
