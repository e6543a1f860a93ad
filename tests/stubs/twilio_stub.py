"""A stub of Twilio's Messages API (REST API 2010-04-01): POST
/2010-04-01/Accounts/{AccountSid}/Messages.json, as its reference documents it.

It checks HTTP Basic auth (the Account SID and auth token, or an API key's SID and secret; else
401 20003), the AccountSid of the path (else 404 20404), a form-encoded body with To in E.164
(else 21211), From or MessagingServiceSid (else 21603), Body of at most 1600 characters (else
21602, 21617); like Twilio it ignores other parameters (tests assert the exact set sent). It answers 201 with the Message
resource of tests/samples/twilio/message.json, or the documented error body
{"code", "message", "more_info", "status"} of tests/samples/twilio/error_<code>.json.

Knobs: `numbers[To] = <Twilio error code>` scripts a number's refusal (e.g. 21610 for a number
that replied STOP), `knobs.delay_s["messages"]`, `knobs.canned["messages"]`. `seen` records
every request; `sent` the messages it accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any

import orjson
from aiohttp import web

from tests.stubs.server import StubServer

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "stub-auth-token-0123456789abcdef"
API_KEY_SID = "SK0123456789abcdef0123456789abcdef"
API_KEY_SECRET = "stub-api-key-secret-0123456789abcdef"

E164 = re.compile(r"\+[1-9][0-9]{7,14}", re.ASCII)
MAX_BODY = 1600


def basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme != "Basic":
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class TwilioStub(StubServer):
    provider = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self.numbers: dict[str, int] = {}
        self.sent: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/2010-04-01/Accounts/{account_sid}/Messages.json", self.create_message)]

    def error(self, code: int, **fill: str) -> web.Response:
        status = {20003: 401, 20404: 404, 20429: 429, 20500: 500}.get(code, 400)
        return self.answer(status, f"error_{code}", **fill)

    async def create_message(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.content_type == "application/x-www-form-urlencoded" else None
        await self.record("messages", request, form)
        await self.pause("messages")
        if basic_auth(request.headers.get("Authorization", "")) not in {(ACCOUNT_SID, AUTH_TOKEN),
                                                                          (API_KEY_SID, API_KEY_SECRET)}:
            return self.error(20003)
        if request.match_info["account_sid"] != ACCOUNT_SID:
            return self.error(20404, path=request.path)
        fields = {key: str(value) for key, value in (form or {}).items()}
        to, sender = fields.get("To", ""), fields.get("From", "")
        if (canned := self.canned("messages", To=to, From=sender, path=request.path)) is not None:
            return canned
        problem = self._problem(form, fields)
        if problem is not None:
            return self.error(problem, To=to, From=sender)
        sid = "SM" + secrets.token_hex(16)
        payload = orjson.loads(self.answer(201, "message").text or "{}")
        payload.update(account_sid=ACCOUNT_SID, sid=sid, to=to, body=fields["Body"],
                       **{"from": sender or None, "messaging_service_sid": fields.get("MessagingServiceSid")})
        payload["uri"] = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"
        self.sent.append(payload)
        return web.json_response(payload, status=201)

    def _problem(self, form: Any, fields: dict[str, str]) -> int | None:
        """The Twilio error code this request earns, or None."""
        if form is None:
            return 21604  # Twilio reads only form parameters: no To at all
        checks = [
            ("To" not in fields, 21604),
            (not E164.fullmatch(fields.get("To", "")), 21211),
            ("From" not in fields and "MessagingServiceSid" not in fields, 21603),
            ("From" in fields and not fields["From"], 21606),
            (not fields.get("Body"), 21602),
            (len(fields.get("Body", "")) > MAX_BODY, 21617),
        ]
        for failed, code in checks:
            if failed:
                return code
        return self.numbers.get(fields["To"])
