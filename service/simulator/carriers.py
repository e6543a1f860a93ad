"""The simulator's carriers and SMS gateway: the subscriber check at start, the add-on check at
confirm (magic numbers pick a refusal), and SMS delivery into each phone's inbox, which a person
or a test reads at `GET /sim/sms?phone=…`.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

from aiohttp import web

from machines.vocabulary import Code
from service.catalog import Catalog
from service.jsonio import json_response
from service.simulator.auth import signed
from service.simulator.bounded import RecentMap, RecentSet
from service.simulator.magic import digits, magic_outcome

# The refusals each channel's upstream can answer at start. ARS: the carrier's subscriber check;
# PASS: the gateway's refusals (6752: the push could not be sent, which the verification
# survives; the others end it).
SUBSCRIBER_REFUSALS: dict[str, frozenset[str]] = {
    "sms": frozenset({Code.CARRIER_REFUSED, Code.CARRIER_DATA_INVALID}),
    "ars": frozenset({Code.CARRIER_REFUSED, Code.CARRIER_DATA_INVALID}),
    "pass": frozenset({"6701", "6704", "6707", "6751", "6752", "6753", "6754", "6755", "6756", "6757"}),
}
ADDON_REFUSALS = frozenset({Code.KT_CORPORATE_LINK_PENDING, Code.SKT_ADDON_PENDING})
INBOX_LIMIT = 50
CODE_IN_TEXT = re.compile(r"\[([0-9]{4,10})\]")


class Carriers:
    """The carriers' subscriber and add-on checks, and the SMS gateway with the phones' inboxes."""

    def __init__(self, catalog: Catalog, secret: str) -> None:
        self.catalog = catalog
        self.secret = secret
        self.inbox: RecentMap[str, deque[dict[str, Any]]] = RecentMap(lambda: deque(maxlen=INBOX_LIMIT))
        self.delivered: RecentSet[str] = RecentSet()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/sms", self.read_inbox)
        app.router.add_post("/provider/subscriber", signed(self.secret, self.check_subscriber))
        app.router.add_post("/provider/addons", signed(self.secret, self.check_addons))
        app.router.add_post("/provider/sms", signed(self.secret, self.deliver_sms))

    @staticmethod
    def _answer(outcome: tuple[str, str | None] | None) -> web.Response:
        code, detail = outcome or (None, None)
        return json_response({"code": code, "detail_code": detail})

    async def check_subscriber(self, _: web.Request, body: dict[str, Any]) -> web.Response:
        allowed = SUBSCRIBER_REFUSALS.get(str(body.get("channel")), frozenset())
        return self._answer(magic_outcome(str(body.get("phone", "")), allowed, self.catalog))

    async def check_addons(self, _: web.Request, body: dict[str, Any]) -> web.Response:
        allowed = ADDON_REFUSALS
        return self._answer(magic_outcome(str(body.get("phone", "")), allowed, self.catalog))

    async def deliver_sms(self, _: web.Request, body: dict[str, Any]) -> web.Response:
        reference = str(body["reference"])
        if self.delivered.add(reference):  # the gateway is idempotent on the reference
            text = str(body["text"])
            found = CODE_IN_TEXT.search(text)
            self.inbox.setdefault(digits(str(body["phone"]))).append({
                "text": text,
                "code": found.group(1) if found else None,
                "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
        return json_response({"code": None, "reference": reference})

    async def read_inbox(self, request: web.Request) -> web.Response:
        phone = digits(request.query.get("phone", ""))
        return json_response({"messages": list(self.inbox.get(phone) or ())})
