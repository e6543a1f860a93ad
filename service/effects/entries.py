"""Outbox entries: how a decision's effect is written down, in the commit that decides it, for
the dispatcher to perform later. One entry kind per handler (`KINDS`)."""

from __future__ import annotations

from typing import Any

import orjson

from machines.effects import Effect, Notify, PlaceCall, SendPush, SendSms
from machines.record import Verification
from machines.vocabulary import Status
from service.views import verification_view

SMS, CALL, PUSH, NOTIFY = "sms", "call", "push", "notify"
KINDS = (SMS, CALL, PUSH, NOTIFY)


def encode(effect: Effect, record: Verification) -> bytes | None:
    """The outbox entry that performs `effect` for `record` (as committed), if it has one."""
    match effect:
        case SendSms(generation, sealed_code):
            return orjson.dumps({"kind": SMS, "id": record.id, "gen": generation, "code": sealed_code})
        case PlaceCall(generation, sealed_code):
            return orjson.dumps({"kind": CALL, "id": record.id, "gen": generation, "code": sealed_code})
        case SendPush(generation):
            return orjson.dumps({"kind": PUSH, "id": record.id, "gen": generation})
        case Notify() if record.callback_url:
            verified_at = record.verified_at if record.status is Status.VERIFIED else None
            return orjson.dumps({
                "kind": NOTIFY, "id": record.id, "version": record.version,
                "view": verification_view(record, None), "client": record.client_id,
                "url": record.callback_url, "verified_at": verified_at,
            })
    return None


def decode(payload: bytes | None) -> dict[str, Any]:
    found = orjson.loads(payload or b"{}")
    return found if isinstance(found, dict) else {}
