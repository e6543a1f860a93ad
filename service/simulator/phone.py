"""The simulator's ARS call centre and PASS app: calls that ring, pushes that wait, and the user's
keypad and approve/deny buttons; every outcome is reported to the service's webhook, signed with
the provider secret, over real HTTP (also when both run in one process). The webhook URL is the
one the simulator was configured with at its start, never one named in a request, and only
requests the service sent (signed: `auth`) ring or wait here: an outcome is only ever reported
about a reference the service sent.

Magic numbers (contract section 5) pick the outcome where the real one would happen: a call
outcome (4604, 4610-4642, 4699) is reported as soon as the call is placed, 4698 (the carrier's
check after the digits) when the user keys them in; a PASS outcome with its detail code (6703,
6705, 6706) as soon as the push arrives. Any other number rings (waits) until the user acts.
State lives in this process's memory.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from machines.ars import CALL_OUTCOMES, CALL_RESULT
from machines.pass_push import PUSH_RESULT
from machines.vocabulary import Code
from service import signing
from service.catalog import Catalog
from service.jsonio import json_response
from service.simulator.auth import signed
from service.simulator.bounded import RecentMap, RecentSet
from service.simulator.magic import digits, magic_outcome

log = structlog.get_logger("veriflow.simulator")

OUTCOMES_AT_KEYPAD = frozenset({"4698"})
OUTCOMES_AT_CALL = CALL_OUTCOMES - OUTCOMES_AT_KEYPAD
OUTCOMES_AT_PUSH = frozenset({"6703", "6705", "6706"})
DENIAL = (Code.APP_DENIED.value, "6205")
WEBHOOK_TIMEOUT_S = 10


@dataclass
class Call:
    reference: str
    display_code: str
    state: str = "ringing"
    outcome: str | None = None


@dataclass
class Push:
    reference: str
    expires_at: float
    state: str = "waiting"

    def current_state(self) -> str:
        if self.state == "waiting" and time.monotonic() >= self.expires_at:
            self.state = "expired"
        return self.state


class PhoneApps:
    """The ARS call centre and the PASS app of the simulator."""

    def __init__(self, catalog: Catalog, provider_secret: str, webhook: str) -> None:
        self.catalog = catalog
        self.secret = provider_secret
        self.webhook = webhook  # the service's provider-event URL, told at start
        self.calls: RecentMap[str, list[Call]] = RecentMap(list)
        self.pushes: RecentMap[str, list[Push]] = RecentMap(list)
        self.references: RecentSet[str] = RecentSet()
        self.session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/provider/ars/call", signed(self.secret, self.place_call))
        app.router.add_post("/provider/pass/push", signed(self.secret, self.send_push))
        app.router.add_get("/ars/{phone}", self.read_calls)
        app.router.add_post("/ars/{phone}/keypad", self.keypad)
        app.router.add_get("/pass/{phone}", self.read_pushes)
        app.router.add_post("/pass/{phone}/approve", self.approve)
        app.router.add_post("/pass/{phone}/deny", self.deny)
        app.on_cleanup.append(self.close)

    async def close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def _magic(self, phone: str, allowed: frozenset[str]) -> tuple[str, str | None] | None:
        return magic_outcome(phone, allowed, self.catalog)

    async def report(self, event_type: str, reference: str, code: str, detail_code: str | None) -> int:
        """POST a signed provider event to the service; returns the HTTP status (0: unreachable)."""
        body = orjson.dumps({"event_id": uuid.uuid4().hex, "type": event_type, "reference": reference,
                             "code": code, "detail_code": detail_code})
        headers = {"Content-Type": "application/json",
                   signing.HEADER: signing.sign(self.secret, body, int(time.time()))}
        if self.session is None:
            self.session = aiohttp.ClientSession()
        try:
            async with self.session.post(self.webhook, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("simulator.webhook_failed", error=repr(exc))
            return 0
        if status != 200:  # noqa: PLR2004
            log.warning("simulator.webhook_refused", status=status)
        return status

    # ---- the provider side: what the service asks for ----

    async def place_call(self, _: web.Request, body: dict[str, Any]) -> web.Response:
        reference, phone = str(body["reference"]), digits(str(body["phone"]))
        if not self.references.add(reference):  # idempotent on the reference: one call per reference
            return json_response({"code": None, "reference": reference})
        for older in self.calls.setdefault(phone):
            if older.state == "ringing":
                older.state = "ended"
        call = Call(reference, str(body["display_code"]))
        self.calls.setdefault(phone).append(call)
        magic = self._magic(phone, OUTCOMES_AT_CALL)
        if magic is not None:
            call.state, call.outcome = "ended", magic[0]
            await self.report(CALL_RESULT, reference, *magic)
        return json_response({"code": None, "reference": reference})

    async def send_push(self, _: web.Request, body: dict[str, Any]) -> web.Response:
        reference, phone = str(body["reference"]), digits(str(body["phone"]))
        if not self.references.add(reference):
            return json_response({"code": None, "reference": reference})
        for older in self.pushes.setdefault(phone):
            if older.current_state() == "waiting":
                older.state = "expired"
        push = Push(reference, time.monotonic() + int(body.get("timeout_s") or 180))
        self.pushes.setdefault(phone).append(push)
        magic = self._magic(phone, OUTCOMES_AT_PUSH)
        if magic is not None:
            push.state = "denied" if magic[0] == Code.APP_DENIED else "expired"
            await self.report(PUSH_RESULT, reference, *magic)
        return json_response({"code": None, "reference": reference})

    # ---- the user's side ----

    async def read_calls(self, request: web.Request) -> web.Response:
        calls = self.calls.get(digits(request.match_info["phone"])) or []
        return json_response({"calls": [
            {"reference": c.reference, "display_code": c.display_code, "state": c.state,
             "outcome": c.outcome} for c in calls]})

    async def keypad(self, request: web.Request) -> web.Response:
        phone = digits(request.match_info["phone"])
        ringing = [c for c in self.calls.get(phone) or [] if c.state == "ringing"]
        if not ringing:
            return _no_call("no ARS call is ringing for this phone yet")
        try:
            keyed = str((await request.json()).get("digits", ""))
        except ValueError:
            keyed = ""
        call = ringing[-1]
        outcome: tuple[str, str | None]
        if not hmac.compare_digest(keyed.encode(), call.display_code.encode()):
            outcome = (Code.ARS_WRONG_DIGITS.value, None)
        else:
            outcome = self._magic(phone, OUTCOMES_AT_KEYPAD) or (Code.SUCCESS.value, None)
        call.state, call.outcome = "ended", outcome[0]
        status = await self.report(CALL_RESULT, call.reference, *outcome)
        return json_response({"outcome": outcome[0], "webhook_status": status})

    async def read_pushes(self, request: web.Request) -> web.Response:
        pushes = self.pushes.get(digits(request.match_info["phone"])) or []
        return json_response({"pushes": [{"reference": p.reference, "state": p.current_state()}
                                              for p in pushes]})

    async def _answer(self, request: web.Request, state: str, outcome: tuple[str, str | None]) -> web.Response:
        phone = digits(request.match_info["phone"])
        waiting = [p for p in self.pushes.get(phone) or [] if p.current_state() == "waiting"]
        if not waiting:
            return _no_call("no PASS push is waiting for this phone yet")
        push = waiting[-1]
        push.state = state
        status = await self.report(PUSH_RESULT, push.reference, *outcome)
        return json_response({"state": state, "webhook_status": status})

    async def approve(self, request: web.Request) -> web.Response:
        return await self._answer(request, "approved", (Code.SUCCESS.value, None))

    async def deny(self, request: web.Request) -> web.Response:
        return await self._answer(request, "denied", DENIAL)


def _no_call(text: str) -> web.Response:
    return json_response({"error": text, "retry": True}, status=409)
