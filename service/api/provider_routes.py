"""Provider webhooks and channel fallback.

`POST /v1/providers/{provider}/events`: the signature is checked before anything else is read
(401 `3004`, changing nothing, when it is missing, wrong or outside the 300 s window). The event
then goes through `Engine.apply` like any other input, and its `event_id` is claimed in the same
commit as the transition it causes: a second delivery finds the claim held and acts not at all.
Events that change nothing (an unknown or finished verification, an old call or push, a replay)
are acknowledged 200 and logged, so the provider stops retrying.

`POST /v1/verifications/{id}/fallback`: turn a failed verification that lists the channel in
`fallback` into that channel's flow (see machines.fallback).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from machines.channels import MACHINES
from machines.core import Decision
from machines.events import Event, ProviderReport, SwitchChannel, Tick
from machines.record import Verification
from machines.vocabulary import Channel, Code
from service import signing
from service.api import channel_events, validation
from service.api.errors import ApiError, invalid
from service.api.routes import CLIENT_ID, issue_code, json_body, render, runtime, subscriber_of
from service.call_effects import parse_reference
from service.engine import BusyError, Claim, ClaimTakenError, UnknownVerificationError
from service.jsonio import json_response
from service.providers.ports import ProviderError

log = structlog.get_logger("veriflow.providers")
routes = web.RouteTableDef()

PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def required(body: dict[str, Any], name: str, limit: int) -> str:
    return validation.text(body, name, limit=limit) or ""  # text() raises 3001 when it is missing


def event_fields(raw: bytes) -> tuple[str, str, str, str, str | None]:
    """`{"event_id", "type", "reference", "code", "detail_code"?}` (contract section 6), or 400 3001."""
    try:
        body = validation.object_body(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    return (required(body, "event_id", 128), required(body, "type", 64), required(body, "reference", 128),
            required(body, "code", 16), validation.text(body, "detail_code", required=False, limit=16))


def acknowledge(outcome: str, event_id: str | None) -> web.Response:
    return json_response({"status": outcome, "event_id": event_id})


@routes.post("/v1/providers/{provider}/events")
async def provider_event(request: web.Request) -> web.Response:
    rt = runtime(request)
    raw = await request.read()
    provider = request.match_info["provider"]
    if not signing.verify(rt.settings.provider_secret, raw, request.headers.get(signing.HEADER), time.time()):
        log.warning("provider_event.bad_signature", provider=provider[:32])
        raise ApiError(Code.BAD_SIGNATURE)
    if not PROVIDER_ID.match(provider):
        raise invalid("the provider id must be a short lowercase name")
    event_id, event_type, reference, code, detail_code = event_fields(raw)
    structlog.contextvars.bind_contextvars(provider=provider, event_id=event_id, event_type=event_type)
    parsed = parse_reference(reference)
    shard = rt.engine.keys.shard_of_id(parsed[0]) if parsed else None
    if parsed is None or shard is None:
        log.info("provider_event.ignored", reason="unknown reference")
        return acknowledge("ignored", event_id)
    verification_id, generation = parsed
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    # A fresh value per delivery: a held claim means an earlier delivery already acted.
    claim = Claim(rt.engine.keys.event_claim(shard, provider, event_id), secrets.token_hex(8),
                  rt.settings.event_dedup_ttl_s * 1000)

    async def report(record: Verification) -> Event:
        now = rt.clock.now_ms()
        if "report" not in MACHINES[record.channel].triggers:  # e.g. a late PASS report after a fallback
            return Tick(now)
        return ProviderReport(now, event_type, code, detail_code, generation)

    try:
        decision = await rt.engine.apply(verification_id, report, claims=lambda _: (claim,))
    except UnknownVerificationError:
        log.info("provider_event.ignored", reason="unknown verification")
        return acknowledge("ignored", event_id)
    except ClaimTakenError:
        log.info("provider_event.duplicate")
        return acknowledge("duplicate", event_id)
    except BusyError:
        raise ApiError(Code.INTERNAL_ERROR, http_status=503, description="too many concurrent writes") from None
    if not decision.changed:
        log.info("provider_event.ignored", reason="changes nothing", state=decision.record.state,
                 generation=generation, reported_code=code)
        return acknowledge("ignored", event_id)
    log.info("provider_event.applied", state=decision.record.state, last_code=decision.record.last_code)
    return acknowledge("applied", event_id)


@routes.post("/v1/verifications/{id}/fallback")
async def fallback(request: web.Request) -> web.Response:
    rt = runtime(request)
    body = await json_body(request)
    name = validation.text(body, "channel", limit=16)
    try:
        channel = Channel(str(name))
    except ValueError:
        raise invalid("channel must be one of sms, ars, pass, motp") from None
    verification_id = request.match_info["id"]
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    unknown = ApiError(Code.UNKNOWN_VERIFICATION, http_status=404)
    if rt.engine.keys.shard_of_id(verification_id) is None:
        raise unknown

    async def switch(record: Verification) -> Event:
        now = rt.clock.now_ms()
        if channel.value not in (record.fallback or "").split(",") or record.subject is None:
            return SwitchChannel(now, channel.value)  # not offered: the machine answers 409
        subject = subscriber_of(rt, record)
        refusal = await channel_events.refusal_at_start(rt, channel, record.id, subject, now)
        start = channel_events.start_event(rt, channel, record, now, refusal,
                                           lambda: issue_code(rt, record.id, record.code_generation + 1))
        return SwitchChannel(now, channel.value, start)

    def tx_claim(decision: Decision) -> tuple[Claim, ...]:
        """The tx_id was released when the verification failed: a live flow takes it back."""
        after = decision.record
        if not (after.tx_id and after.is_live and decision.before.channel != after.channel):
            return ()
        live_ms = (rt.settings.session_ttl_s(after.channel) + rt.settings.result_ttl_s + 60) * 1000
        key = rt.engine.keys.tx_claim(int(after.id[:4], 16), after.client_id, after.tx_id)
        return (Claim(key, after.id, live_ms),)

    try:
        decision = await rt.engine.apply(verification_id, switch, client_id=request[CLIENT_ID], claims=tx_claim)
    except UnknownVerificationError:
        raise unknown from None
    except ClaimTakenError:
        raise ApiError(Code.DUPLICATE_TX_ID) from None
    except (BusyError, ProviderError) as exc:
        raise ApiError(Code.INTERNAL_ERROR, http_status=503, description=str(exc)) from None
    return render(rt, decision)
