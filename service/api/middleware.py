"""Cross-cutting request handling: errors, API keys, idempotency, metrics, log context."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web

from machines.vocabulary import Code
from service.api.context import CLIENT_ID, CLIENTS, RUNTIME
from service.api.envelope import render_for
from service.errors import ApiError, VeriflowError, as_api_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("veriflow.api")

PUBLIC_V1 = ("/v1/catalog", "/v1/providers/")
IDEMPOTENCY_TTL_S = 86_400
# A redeemed result carries the person's data, which must not outlive the verification for
# long: its replay is kept (sealed) just long enough for a client's retry.
PERSONAL_DATA_REPLAY_TTL_S = 60
PERSONAL_DATA_ROUTES = frozenset({"/v1/results"})
# While the first request runs, the key is held only briefly: a process that dies mid-request
# must not block the client's retry for a day.
IN_PROGRESS_TTL_S = 60
TOO_MANY = 429


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(method=request.method, path=request.path)
    try:
        return await handler(request)
    except VeriflowError as exc:
        return render_for(request, as_api_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:  # noqa: PLR2004 - redirects are not errors
            raise
        # aiohttp's own refusals (no such route, wrong method, body too large) get the envelope too.
        code = Code.UNKNOWN_VERIFICATION if exc.status == 404 else Code.INVALID_REQUEST  # noqa: PLR2004
        return render_for(request, ApiError(code, http_status=exc.status, description=exc.reason))
    except Exception:
        log.exception("api.unhandled")
        return render_for(request, ApiError(Code.INTERNAL_ERROR))


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/") and not request.path.startswith(PUBLIC_V1):
        client_id = request.app[CLIENTS].get(_key_digest(request))
        if client_id is None:
            raise ApiError(Code.BAD_API_KEY)
        request[CLIENT_ID] = client_id
        structlog.contextvars.bind_contextvars(client_id=client_id)
    return await handler(request)


def _key_digest(request: web.Request) -> bytes:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return b""
    return hashlib.sha256(key.strip().encode()).digest()


def client_table(api_keys: dict[str, str]) -> dict[bytes, str]:
    """API keys are looked up by their SHA-256: the lookup time does not depend on the key.

    Unkeyed on purpose: the digest of a long random secret, held in this process's memory only
    (never stored, logged or sent), and not derived from anyone's personal data."""
    return {hashlib.sha256(key.encode()).digest(): client for client, key in api_keys.items()}


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The same Idempotency-Key with the same body answers the first response again."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or CLIENT_ID not in request:
        return await handler(request)
    rt = request.app[RUNTIME]
    store = rt.store
    slot = store.keys.idempotency(request[CLIENT_ID], key)
    fingerprint = rt.secrets.request_fingerprint(request.path, await request.read())
    pending = orjson.dumps({"fingerprint": fingerprint})
    held = await store.hold_idempotency_key(slot, pending, IN_PROGRESS_TTL_S)
    if held is not None:
        stored = orjson.loads(held)
        if not hmac.compare_digest(stored["fingerprint"], fingerprint):
            raise ApiError(Code.IDEMPOTENCY_MISMATCH)
        if "status" not in stored:
            raise ApiError(Code.IDEMPOTENCY_IN_PROGRESS)
        return web.Response(body=rt.secrets.unseal(stored["sealed"], slot), status=stored["status"],
                            content_type="application/json")
    try:
        response = await _rendered(request, handler)
    except BaseException:
        await store.drop_idempotency_key(slot)  # nothing was answered: the key may be used again
        raise
    if response.status >= 500 or response.status == TOO_MANY or not isinstance(response, web.Response):  # noqa: PLR2004
        # A 429 (an abuse limit's 3006 above all) is not kept: the same key may be retried later.
        await store.drop_idempotency_key(slot)
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    # Sealed: answers carry personal data (results) and secrets (an mOTP enrolment's URI).
    record = {"fingerprint": fingerprint, "status": response.status, "sealed": rt.secrets.seal(body, slot)}
    keep_s = PERSONAL_DATA_REPLAY_TTL_S if request.path in PERSONAL_DATA_ROUTES else IDEMPOTENCY_TTL_S
    await store.keep_idempotent_answer(slot, orjson.dumps(record), keep_s)
    return response


async def _rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors are answers too: render them here so that they are replayed like successes."""
    try:
        return await handler(request)
    except VeriflowError as exc:
        return render_for(request, as_api_error(exc))


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[RUNTIME].metrics.request_seconds.labels(
            request.method, route, str(status)).observe(time.perf_counter() - started)
