"""The `/v1` handlers. Each one validates, builds an event, lets the engine decide and commit,
and renders the decision; none of them decides anything itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson
import structlog
from aiohttp import web

from machines import sms
from machines.channels import MACHINES
from machines.core import NEW, Decision
from machines.events import Cancel, Confirm, Event, IssuedCode, Redeem, Resend, Tick
from machines.record import Verification
from machines.vocabulary import Channel, Code, Status
from service.api import channel_events, validation
from service.api.errors import ApiError, invalid
from service.crypto import new_code, token_id
from service.engine import BusyError, ClaimTakenError, UnknownVerificationError
from service.jsonio import json_response
from service.motp import Motp
from service.providers.ports import ProviderError, Subscriber
from service.runtime import Runtime
from service.views import rfc3339, verification_view

RUNTIME = web.AppKey("runtime", Runtime)
CLIENT_ID = web.RequestKey("client_id", str)

routes = web.RouteTableDef()


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    return validation.object_body(body)


def render(rt: Runtime, decision: Decision, success_status: int = 200) -> web.Response:
    view = verification_view(decision.record, rt.secrets)
    reply = decision.reply
    if reply.ok:
        return json_response(view, status=success_status)
    raise ApiError(reply.code or Code.INTERNAL_ERROR, http_status=reply.http_status,
                   detail_code=reply.detail_code, verification=view)


def issue_code(rt: Runtime, verification_id: str, generation: int) -> IssuedCode:
    """Draw a code for `generation`: keep its keyed hash, seal it for the outbox, forget it."""
    code = new_code(rt.settings.sms.code_length)
    return IssuedCode(
        code_hash=rt.secrets.code_hash(verification_id, generation, code),
        sealed_code=rt.secrets.seal(code.encode(), f"{verification_id}|{generation}"),
    )


def subscriber_of(rt: Runtime, record: Verification) -> Subscriber:
    return rt.secrets.subject(record)


async def transition(
    request: web.Request, build_event: Callable[[Verification], Awaitable[Event]], unknown_code: Code,
) -> Decision:
    """Apply an event to the caller's own verification named in the path."""
    rt = runtime(request)
    verification_id = request.match_info["id"]
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    if rt.engine.keys.shard_of_id(verification_id) is None:
        raise ApiError(unknown_code, http_status=404)
    try:
        return await rt.engine.apply(verification_id, build_event, client_id=request[CLIENT_ID])
    except UnknownVerificationError:
        raise ApiError(unknown_code, http_status=404) from None
    except BusyError:
        raise ApiError(Code.INTERNAL_ERROR, http_status=503, description="too many concurrent writes") from None
    except ProviderError as exc:
        raise ApiError(Code.INTERNAL_ERROR, http_status=503, description=str(exc)) from None


@routes.post("/v1/verifications")
async def start_verification(request: web.Request) -> web.Response:
    rt = runtime(request)
    client_id: str = request[CLIENT_ID]
    body = await json_body(request)
    if body.get("channel") == Channel.MOTP.value:
        from service.api import motp_routes  # noqa: PLC0415 - it builds on this module

        return await motp_routes.start_verification(request, body)
    start = validation.start_request(
        body, available=set(MACHINES), allow_private=rt.settings.allow_private_callbacks,
    )
    keys = rt.engine.keys
    # A tx_id's claim must share its verification's slot, so the tx_id picks the shard.
    shard = keys.tx_shard(client_id, start.tx_id) if start.tx_id else keys.shard_of(start.subject.phone)
    verification_id = keys.new_id(shard)
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    now = rt.clock.now_ms()
    try:
        refusal = await channel_events.refusal_at_start(rt, start.channel, verification_id, start.subject, now)
    except ProviderError as exc:
        raise ApiError(Code.INTERNAL_ERROR, http_status=503, description=str(exc)) from None
    record = Verification(
        id=verification_id, client_id=client_id, channel=start.channel, state=NEW,
        status=Status.PENDING, version=0, definition="", created_at=now, tx_id=start.tx_id,
        callback_url=start.callback_url, service_name=start.service_name,
        subject=rt.secrets.seal_subject(start.subject, verification_id),
    )
    event = channel_events.start_event(rt, start.channel, record, now, refusal,
                                       lambda: issue_code(rt, verification_id, 1))
    try:
        decision = await rt.engine.create(record, event)
    except ClaimTakenError:
        raise ApiError(Code.DUPLICATE_TX_ID) from None
    return render(rt, decision, success_status=201)


@routes.get("/v1/verifications/{id}")
async def get_verification(request: web.Request) -> web.Response:
    rt = runtime(request)

    async def tick(_: Verification) -> Event:
        return Tick(rt.clock.now_ms())

    decision = await transition(request, tick, Code.UNKNOWN_VERIFICATION)
    return json_response(verification_view(decision.record, rt.secrets))


@routes.post("/v1/verifications/{id}/confirm")
async def confirm(request: web.Request) -> web.Response:
    rt = runtime(request)
    body = await json_body(request)

    async def event(record: Verification) -> Event:
        if record.channel in channel_events.CODELESS:  # ARS, PASS: "has the user finished?"
            return Confirm(rt.clock.now_ms())
        code = validation.code(body)
        if record.channel is Channel.MOTP:
            return await Motp(rt.engine).confirm_event(record, code)
        code_hash = rt.secrets.code_hash(record.id, record.code_generation, code)
        refusal = None
        if record.status is Status.PENDING and sms.code_matches(record, code_hash):
            # Only a matching code is worth the carrier's add-on check.
            refusal = await rt.provider.check_addons(record.id, subscriber_of(rt, record).phone)
        return Confirm(rt.clock.now_ms(), code_hash=code_hash, refusal=refusal)

    return render(rt, await transition(request, event, Code.NOT_CONFIRMABLE))


@routes.post("/v1/verifications/{id}/resend")
async def resend(request: web.Request) -> web.Response:
    rt = runtime(request)

    async def event(record: Verification) -> Event:
        if record.channel in channel_events.CODELESS:
            return channel_events.resend_event(rt, record, rt.clock.now_ms())
        return Resend(rt.clock.now_ms(), issue_code(rt, record.id, record.code_generation + 1))

    return render(rt, await transition(request, event, Code.UNKNOWN_FOR_RESEND))


@routes.post("/v1/verifications/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    rt = runtime(request)

    async def event(_: Verification) -> Event:
        return Cancel(rt.clock.now_ms())

    return render(rt, await transition(request, event, Code.UNKNOWN_VERIFICATION))


@routes.post("/v1/results")
async def redeem_result(request: web.Request) -> web.Response:
    rt = runtime(request)
    token = validation.text(await json_body(request), "key_token", limit=256)
    assert token is not None  # noqa: S101 - required
    verification_id = token_id(token)
    gone = ApiError(Code.RESULT_GONE)
    if rt.engine.keys.shard_of_id(verification_id) is None:
        raise gone
    structlog.contextvars.bind_contextvars(verification_id=verification_id)

    async def event(record: Verification) -> Event:
        ok = record.verified_at is not None and rt.secrets.key_token_matches(
            token, record.id, record.verified_at)
        return Redeem(rt.clock.now_ms(), token_ok=ok)

    try:
        decision = await rt.engine.apply(verification_id, event, client_id=request[CLIENT_ID])
    except UnknownVerificationError:
        raise gone from None
    if not decision.reply.ok:
        raise gone
    person = subscriber_of(rt, decision.before)
    result = {**asdict(person), "channel": decision.record.channel.value,
              "verified_at": rfc3339(decision.record.verified_at)}
    return json_response({"result": result})


@routes.get("/v1/catalog")
async def catalog(request: web.Request) -> web.Response:
    return json_response(runtime(request).catalog.as_json())
