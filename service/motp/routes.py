"""The mOTP users' routes: enrol, read, unlock. An mOTP verification goes through the shared
`/v1/verifications` routes (its shell is `service.motp.channel`).

The device's secret is shown once: the enrolment answer carries the `otpauth://` URI and the
same URI as a QR code (`qr_svg`); nothing reads it back afterwards (there is no QR route), so a
client key alone cannot clone an enrolled authenticator. Registering again shows a new secret."""

from __future__ import annotations

import io

import segno
from aiohttp import web

from machines.motp_user import MotpUser
from service.api import validation
from service.api.context import CLIENT_ID, json_body, runtime
from service.jsonio import json_response
from service.motp.enrolment import Motp, unknown_user, user_view

routes = web.RouteTableDef()


def motp(request: web.Request) -> Motp:
    rt = runtime(request)
    return Motp(rt.transactor, rt.secrets)


async def existing_user(request: web.Request) -> tuple[str, MotpUser]:
    user_id = validation.user_id(request.match_info["user_id"])
    user = await motp(request).load(request[CLIENT_ID], user_id)
    if user is None:
        raise unknown_user()
    return user_id, user


@routes.post("/v1/motp/users")
async def enrol(request: web.Request) -> web.Response:
    body = validation.motp_user_request(await json_body(request))
    enrolment = await motp(request).enrol(request[CLIENT_ID], body.user_id, body.name, body.phone)
    answer = {**user_view(body.user_id, enrolment.user), "otpauth_uri": enrolment.otpauth_uri,
              "qr_svg": qr_svg(enrolment.otpauth_uri)}
    return json_response(answer, status=201)


def qr_svg(uri: str) -> str:
    """The otpauth URI as a QR code (SVG), for the authenticator app to scan."""
    svg = io.BytesIO()
    segno.make(uri, error="m").save(svg, kind="svg", scale=4)
    return svg.getvalue().decode()


@routes.get("/v1/motp/users/{user_id}")
async def read_user(request: web.Request) -> web.Response:
    user_id, user = await existing_user(request)
    return json_response(user_view(user_id, user))


@routes.post("/v1/motp/users/{user_id}/unlock")
async def unlock(request: web.Request) -> web.Response:
    user_id = validation.user_id(request.match_info["user_id"])
    token = validation.key_token(await json_body(request))
    user = await motp(request).unlock(request[CLIENT_ID], user_id, token)
    return json_response(user_view(user_id, user))
