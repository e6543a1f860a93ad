"""The `/v1/verifications` and `/v1/results` handlers. Each one validates, lets its channel's shell
build the event, lets the transactor decide and commit, and renders the decision; none of them
decides anything itself, and none branches on the channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import structlog
from aiohttp import web

from machines.common import RESEND_DETAIL_UNKNOWN
from machines.core import Decision, deadline_passed
from machines.events import Cancel, Event, Redeem, Start, StartCall, SwitchChannel, Tick
from machines.record import Verification
from machines.vocabulary import Channel, Code
from service.api import validation
from service.api.context import CLIENT_ID, json_body, render, runtime
from service.channels.admission import Admission
from service.channels.base import EventBuilder
from service.channels.registry import CHANNELS
from service.crypto import token_id
from service.errors import ApiError, ClaimTakenError, UnknownVerificationError
from service.jsonio import json_response
from service.store.plan import Claim
from service.views import rfc3339, verification_view

routes = web.RouteTableDef()
# The detail code of a route's "unknown" answer: a resend names no request at all (4003/4004).
UNKNOWN_DETAIL = {Code.UNKNOWN_FOR_RESEND: RESEND_DETAIL_UNKNOWN}


async def transition(request: web.Request, build_event: EventBuilder, unknown_code: Code,
                     claims: Callable[[Decision], Sequence[Claim]] | None = None, *,
                     read: bool = False) -> Decision:
    """Apply an event to the caller's own verification named in the path. A step whose builder
    counts a limit before the decision (resend, fallback) `read`s the stored record: on a copy,
    simultaneous requests would all count the send that only one of them makes."""
    rt = runtime(request)
    verification_id = request.match_info["id"]
    structlog.contextvars.bind_contextvars(verification_id=verification_id)
    if rt.store.keys.shard_of_id(verification_id) is None:
        raise _unknown(unknown_code)
    try:
        return await rt.transactor.apply(verification_id, build_event, client_id=request[CLIENT_ID],
                                         claims=claims, read=read)
    except UnknownVerificationError:
        raise _unknown(unknown_code) from None


def _unknown(code: Code) -> ApiError:
    return ApiError(code, http_status=404, detail_code=UNKNOWN_DETAIL.get(code))


@routes.post("/v1/verifications")
async def start_verification(request: web.Request) -> web.Response:
    rt = runtime(request)
    body = await json_body(request)
    shell = CHANNELS[validation.channel(body)]
    admission = Admission(rt, request[CLIENT_ID])
    decision: Decision | None = None
    try:
        try:
            record, event = await shell.prepare_start(rt, request[CLIENT_ID], body, admission)
            decision = await rt.transactor.create(record, event, tx_id_held=admission.tx_id_held is not None)
        except ClaimTakenError:
            raise ApiError(Code.DUPLICATE_TX_ID) from None
    finally:
        await admission.settle(decision)
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
    body = validation.confirm_body(await json_body(request))
    builders: dict[Channel, EventBuilder] = {}  # one per request: it asks its upstreams once

    async def event(record: Verification) -> Event:
        if record.channel not in builders:
            builders[record.channel] = CHANNELS[record.channel].confirm(rt, body)
        return await builders[record.channel](record)

    return render(rt, await transition(request, event, Code.NOT_CONFIRMABLE))


@routes.post("/v1/verifications/{id}/resend")
async def resend(request: web.Request) -> web.Response:
    rt = runtime(request)
    admission = Admission(rt, request[CLIENT_ID])
    builders: dict[Channel, EventBuilder] = {}  # one per request: its memo outlives a lost race

    async def event(record: Verification) -> Event:
        if record.channel not in builders:
            builders[record.channel] = CHANNELS[record.channel].resend(rt)
        built = await builders[record.channel](record)
        await admission.admit(record, built)  # limits: after section 7, before the caps
        return built

    decision: Decision | None = None
    try:
        decision = await transition(request, event, Code.UNKNOWN_FOR_RESEND, read=True)
    finally:
        await admission.settle(decision)
    return render(rt, decision)


@routes.post("/v1/verifications/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    rt = runtime(request)

    async def event(_: Verification) -> Event:
        return Cancel(rt.clock.now_ms())

    return render(rt, await transition(request, event, Code.UNKNOWN_VERIFICATION))


@routes.post("/v1/verifications/{id}/fallback")
async def fallback(request: web.Request) -> web.Response:
    """Turn a failed verification that lists the channel in `fallback` into that channel's flow
    (see machines.fallback)."""
    rt = runtime(request)
    channel = validation.fallback_channel(await json_body(request))
    shell = CHANNELS[channel]
    admission = Admission(rt, request[CLIENT_ID])

    starts: dict[tuple[int, int], Start | StartCall] = {}  # the upstream is asked once per request

    async def switch(record: Verification) -> Event:
        now = rt.clock.now_ms()
        offered = channel.value in (record.fallback or "").split(",")
        if not (offered and shell.takes_over) or record.subject is None:
            return SwitchChannel(now, channel.value)  # not offered: the machine answers 409
        if not deadline_passed(record, now):  # else the offer is withdrawn first: a 409, not a send
            await admission.send(record)  # counted once, before the new channel asks the upstream
        generations = (record.code_generation, record.call_generation)
        if generations not in starts:
            start = await shell.start_event(rt, record, rt.secrets.subject(record), now)
            assert isinstance(start, Start | StartCall)  # noqa: S101 - what a channel that takes over starts with
            starts[generations] = start
        return SwitchChannel(now, channel.value, starts[generations])

    def tx_claim(decision: Decision) -> tuple[Claim, ...]:
        """The tx_id was released when the verification failed: a live flow takes it back."""
        after = decision.record
        if not (after.tx_id and after.is_live and decision.before.channel != after.channel):
            return ()
        claim = rt.transactor.plan.tx_claim(after)
        return () if claim is None else (claim,)

    decision: Decision | None = None
    try:
        decision = await transition(request, switch, Code.UNKNOWN_VERIFICATION, claims=tx_claim, read=True)
    except ClaimTakenError:
        raise ApiError(Code.DUPLICATE_TX_ID) from None
    finally:
        await admission.settle(decision)
    return render(rt, decision)


@routes.post("/v1/results")
async def redeem_result(request: web.Request) -> web.Response:
    rt = runtime(request)
    token = validation.key_token(await json_body(request))
    verification_id = token_id(token)
    if rt.store.keys.shard_of_id(verification_id) is None:
        raise ApiError(Code.RESULT_GONE)
    structlog.contextvars.bind_contextvars(verification_id=verification_id)

    async def event(record: Verification) -> Event:
        ok = record.verified_at is not None and rt.secrets.key_token_matches(
            token, record.id, record.verified_at)
        return Redeem(rt.clock.now_ms(), token_ok=ok)

    try:
        decision = await rt.transactor.apply(verification_id, event, client_id=request[CLIENT_ID])
    except UnknownVerificationError:
        raise ApiError(Code.RESULT_GONE) from None
    if not decision.reply.ok:
        raise ApiError(Code.RESULT_GONE)
    person = rt.secrets.subject(decision.before)
    result = {**asdict(person), "channel": decision.record.channel.value,
              "verified_at": rfc3339(decision.record.verified_at)}
    return json_response({"result": result})


@routes.get("/v1/catalog")
async def catalog(request: web.Request) -> web.Response:
    return json_response(runtime(request).catalog.as_json())
