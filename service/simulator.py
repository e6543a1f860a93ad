"""The provider simulator, mounted under `/sim`: carriers and an SMS gateway that run offline.

The service reaches it over HTTP through its provider adapters, exactly as it would reach a
real upstream. Magic phone numbers (contract section 5) produce each upstream outcome where the
real one would happen; any other number is a healthy subscriber. State lives in this process's
memory.

What a person (or a test) uses, as `veriflow serve` mounts it:
- `GET /sim/sms?phone=…`: the SMS texts delivered to that phone, oldest first;
- `GET /sim/ars/{phone}`, `POST /sim/ars/{phone}/keypad`: the call ringing, and keying digits into it;
- `GET /sim/pass/{phone}`, `POST /sim/pass/{phone}/approve` and `/deny`: the PASS app's pushes.
The call centre and the app (`service.simulator_phone`) report outcomes to the service's
webhook, signed with the provider secret, over real HTTP.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, defaultdict, deque
from typing import Any

from aiohttp import web

from machines.vocabulary import Code
from service.catalog import Catalog
from service.jsonio import json_response
from service.settings import DEV_PROVIDER_SECRET
from service.simulator_phone import PhoneApps

SUBSCRIBER_REFUSALS: dict[str, set[str]] = {"sms": {Code.CARRIER_REFUSED, Code.CARRIER_DATA_INVALID}}
ADDON_REFUSALS = {Code.KT_CORPORATE_LINK_PENDING, Code.SKT_ADDON_PENDING}
# ARS: the carrier's subscriber check; PASS: the gateway's refusals at start (6752: the push
# could not be sent, which the verification survives; the others end it).
SUBSCRIBER_REFUSALS.update({
    "ars": {Code.CARRIER_REFUSED, Code.CARRIER_DATA_INVALID},
    "pass": {"6701", "6704", "6707", "6751", "6752", "6753", "6754", "6755", "6756", "6757"},
})
INBOX_LIMIT = 50
REMEMBERED_REFERENCES = 100_000  # enough to de-duplicate any retry, bounded memory
CODE_IN_TEXT = re.compile(r"\[(\d{4,10})\]")


def digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def magic_outcome(phone: str, allowed: set[str], catalog: Catalog) -> tuple[str, str | None] | None:
    """The outcome a magic number asks for, among the codes `allowed` at this point.

    The last 8 digits may be a code followed by one of its detail codes (01067016030 ->
    6701/6030); otherwise the last 4 digits may be a code (01000004611 -> 4611).
    """
    number = digits(phone)
    code, detail = number[-8:-4], number[-4:]
    if code in allowed and code in catalog and detail in catalog.get(code).detail_codes:
        return code, detail
    if number[-4:] in allowed:
        return number[-4:], None
    return None


class Simulator:
    def __init__(self, catalog: Catalog, provider_secret: str = DEV_PROVIDER_SECRET) -> None:
        self.catalog = catalog
        self.phone_apps = PhoneApps(catalog, provider_secret, magic_outcome)
        self.inbox: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=INBOX_LIMIT))
        self.delivered: OrderedDict[str, None] = OrderedDict()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sms", self.read_inbox)
        app.router.add_post("/provider/subscriber", self.check_subscriber)
        app.router.add_post("/provider/addons", self.check_addons)
        app.router.add_post("/provider/sms", self.deliver_sms)
        self.phone_apps.add_routes(app)
        return app

    @staticmethod
    def _answer(outcome: tuple[str, str | None] | None) -> web.Response:
        code, detail = outcome or (None, None)
        return json_response({"code": code, "detail_code": detail})

    async def check_subscriber(self, request: web.Request) -> web.Response:
        body = await request.json()
        allowed = {str(c) for c in SUBSCRIBER_REFUSALS.get(str(body.get("channel")), set())}
        return self._answer(magic_outcome(str(body.get("phone", "")), allowed, self.catalog))

    async def check_addons(self, request: web.Request) -> web.Response:
        body = await request.json()
        allowed = {str(c) for c in ADDON_REFUSALS}
        return self._answer(magic_outcome(str(body.get("phone", "")), allowed, self.catalog))

    async def deliver_sms(self, request: web.Request) -> web.Response:
        body = await request.json()
        reference = str(body["reference"])
        if reference not in self.delivered:  # the gateway is idempotent on the reference
            self.delivered[reference] = None
            if len(self.delivered) > REMEMBERED_REFERENCES:
                self.delivered.popitem(last=False)
            text = str(body["text"])
            found = CODE_IN_TEXT.search(text)
            self.inbox[digits(str(body["phone"]))].append({
                "text": text,
                "code": found.group(1) if found else None,
                "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
        return json_response({"code": None, "reference": reference})

    async def read_inbox(self, request: web.Request) -> web.Response:
        phone = digits(request.query.get("phone", ""))
        return json_response({"messages": list(self.inbox.get(phone, ()))})
