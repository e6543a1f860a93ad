"""Provider webhooks.

`POST /v1/providers/{provider}/events`: the signature is checked with THAT provider's own secret
before anything else is read (401 `3004`, changing nothing, when it is missing, wrong or outside
the 300 s window, and alike for a provider id the service does not know, so nothing is learned).
The event then goes through `Engine.apply` like any other input, and its `event_id` is claimed,
under the authenticated provider's id, in the same commit as the transition it causes: a second
delivery finds the claim held and acts not at all. An event acts only on a verification whose
calls or pushes that provider serves (`Verification.provider`). Events that change nothing (an
unknown or finished verification, another provider's verification, an old call or push, a
replay) are acknowledged 200 and logged, so the provider stops retrying.
"""

from __future__ import annotations

import re
import secrets
import time

import orjson
import structlog
from aiohttp import web

from machines.channels import MACHINES
from machines.events import Event, ProviderReport, Tick
from machines.record import Verification
from machines.vocabulary import Code
from service import signing
from service.api import validation
from service.api.context import runtime
from service.errors import ApiError, ClaimTakenError, UnknownVerificationError, invalid
from service.jsonio import json_response
from service.providers.config import SIMULATOR
from service.providers.references import parse_reference
from service.store import audit
from service.store.plan import Claim

log = structlog.get_logger("veriflow.providers")
routes = web.RouteTableDef()

PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)


def event_fields(raw: bytes) -> tuple[str, str, str, str, str | None]:
    """`{"event_id", "type", "reference", "code", "detail_code"?}` (contract section 6), or 400 3001."""
    try:
        body = validation.object_body(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    event = validation.provider_event(body)
    return event.event_id, event.type, event.reference, event.code, event.detail_code


def acknowledge(outcome: str, event_id: str | None) -> web.Response:
    return json_response({"status": outcome, "event_id": event_id})


@routes.post("/v1/providers/{provider}/events")
async def provider_event(request: web.Request) -> web.Response:
    rt = runtime(request)
    raw = await request.read()
    provider = request.match_info["provider"]
    secret = rt.provider_secrets.get(provider) if PROVIDER_ID.match(provider) else None
    if secret is None or not signing.verify(secret, raw, request.headers.get(signing.HEADER), time.time()):
        # Counted, not logged: an unsigned request per line would let anyone fill the logs.
        rt.metrics.webhook_refusals.labels("unknown_provider" if secret is None else "bad_signature").inc()
        raise ApiError(Code.BAD_SIGNATURE)
    if not PROVIDER_ID.fullmatch(provider):
        raise invalid("the provider id must be a short lowercase name")
    event_id, event_type, reference, code, detail_code = event_fields(raw)
    structlog.contextvars.bind_contextvars(provider=provider, event_id=event_id, event_type=event_type)
    parsed = parse_reference(reference)
    shard = rt.store.keys.shard_of_id(parsed[0]) if parsed else None
    if parsed is None or shard is None:
        log.info("provider_event.ignored", reason="unknown reference")
        return acknowledge("ignored", event_id)
    verification_id, generation = parsed
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    # A fresh value per delivery: a held claim means an earlier delivery already acted.
    claim = Claim(rt.store.keys.event_claim(shard, provider, event_id), secrets.token_hex(8),
                  rt.settings.event_dedup_ttl_s * 1000)

    async def report(record: Verification) -> Event:
        now = rt.clock.now_ms()
        if "report" not in MACHINES[record.channel].triggers:  # e.g. a late PASS report after a fallback
            return Tick(now)
        if (record.provider or SIMULATOR) != provider:  # not a request this provider was sent
            log.info("provider_event.ignored", reason="another provider's verification")
            return Tick(now)
        return ProviderReport(now, event_type, code, detail_code, generation)

    try:
        decision = await rt.transactor.apply(verification_id, report, claims=lambda _: (claim,),
                                             actor=audit.provider(provider))
    except UnknownVerificationError:
        log.info("provider_event.ignored", reason="unknown verification")
        return acknowledge("ignored", event_id)
    except ClaimTakenError:
        log.info("provider_event.duplicate")
        return acknowledge("duplicate", event_id)
    if not decision.changed:
        log.info("provider_event.ignored", reason="changes nothing", state=decision.record.state,
                 generation=generation, reported_code=code)
        return acknowledge("ignored", event_id)
    log.info("provider_event.applied", state=decision.record.state, last_code=decision.record.last_code)
    return acknowledge("applied", event_id)
