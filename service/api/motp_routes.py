"""The mOTP routes: users (enrol, read, QR code, unlock) and the start of an mOTP verification.
Confirm, read, cancel and redeem are the shared `/v1/verifications` routes."""

from __future__ import annotations

import io
from typing import Any

import segno
import structlog
from aiohttp import web

from machines.core import NEW
from machines.events import MotpStart
from machines.motp_user import MotpUser
from machines.record import Verification
from machines.vocabulary import Channel, Code, Status
from service.api import validation
from service.api.errors import ApiError
from service.api.routes import CLIENT_ID, json_body, render, runtime
from service.engine import BusyError, ClaimTakenError
from service.jsonio import json_response
from service.keys import motp_user_ref, motp_user_shard
from service.motp import Motp, MotpRefusalError, unknown_user, user_view

routes = web.RouteTableDef()


def motp(request: web.Request) -> Motp:
    return Motp(runtime(request).engine)


def refused(exc: MotpRefusalError) -> ApiError:
    return ApiError(exc.code, http_status=exc.http_status)


def busy() -> ApiError:
    return ApiError(Code.INTERNAL_ERROR, http_status=503, description="too many concurrent writes")


async def start_verification(request: web.Request, body: dict[str, Any]) -> web.Response:
    """`POST /v1/verifications` with channel motp: created in the user's slot, so a decision
    can change the verification and the user in one step."""
    rt = runtime(request)
    client_id: str = request[CLIENT_ID]
    start = validation.motp_start_request(body, allow_private=rt.settings.allow_private_callbacks)
    keys = rt.engine.keys
    ref = motp_user_ref(client_id, start.user_id)
    shard = motp_user_shard(keys, ref)
    verification_id = keys.new_id(shard)
    structlog.contextvars.bind_contextvars(verification_id=verification_id, motp_user=ref)
    m = Motp(rt.engine)
    user = await m.store_user(ref)
    refusal = m.start_refusal(user, start.subject.name, start.subject.phone)
    now = rt.clock.now_ms()
    record = Verification(
        id=verification_id, client_id=client_id, channel=Channel.MOTP, state=NEW,
        status=Status.PENDING, version=0, definition="", created_at=now, tx_id=start.tx_id,
        callback_url=start.callback_url, service_name=start.service_name, motp_user=ref,
        subject=rt.secrets.seal_subject(start.subject, verification_id),
    )
    try:
        # The verification lives in its user's slot; the engine claims its tx_id in the tx_id's
        # own shard, like every channel's, so a tx_id is unique across all of them.
        decision = await rt.engine.create(record, MotpStart(now, user=user, refusal=refusal))
    except ClaimTakenError:
        raise ApiError(Code.DUPLICATE_TX_ID) from None
    except BusyError:
        raise busy() from None
    return render(rt, decision, success_status=201)


async def existing_user(request: web.Request) -> tuple[str, MotpUser]:
    user_id = validation.user_id(request.match_info["user_id"])
    user = await motp(request).load(request[CLIENT_ID], user_id)
    if user is None:
        raise refused(unknown_user())
    return user_id, user


@routes.post("/v1/motp/users")
async def enrol(request: web.Request) -> web.Response:
    body = validation.motp_user_request(await json_body(request))
    try:
        enrolment = await motp(request).enrol(request[CLIENT_ID], body.user_id, body.name, body.phone)
    except MotpRefusalError as exc:
        raise refused(exc) from None
    except BusyError:
        raise busy() from None
    answer = {**user_view(body.user_id, enrolment.user), "otpauth_uri": enrolment.otpauth_uri}
    return json_response(answer, status=201)


@routes.get("/v1/motp/users/{user_id}")
async def read_user(request: web.Request) -> web.Response:
    user_id, user = await existing_user(request)
    return json_response(user_view(user_id, user))


@routes.get("/v1/motp/users/{user_id}/qr.svg")
async def qr_code(request: web.Request) -> web.Response:
    """The current device's otpauth URI as a QR code, for the authenticator app to scan."""
    user_id, user = await existing_user(request)
    svg = io.BytesIO()
    segno.make(motp(request).otpauth_uri(user_id, user), error="m").save(svg, kind="svg", scale=4)
    return web.Response(body=svg.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


@routes.post("/v1/motp/users/{user_id}/unlock")
async def unlock(request: web.Request) -> web.Response:
    user_id = validation.user_id(request.match_info["user_id"])
    token = validation.text(await json_body(request), "key_token", limit=256)
    assert token is not None  # noqa: S101 - required
    try:
        user = await motp(request).unlock(request[CLIENT_ID], user_id, token)
    except MotpRefusalError as exc:
        raise refused(exc) from None
    except BusyError:
        raise busy() from None
    return json_response(user_view(user_id, user))
