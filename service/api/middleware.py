"""Cross-cutting request handling: errors, API keys, idempotency, metrics, log context."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from machines.vocabulary import Code
from service.api import idempotency as held_keys
from service.api import validation
from service.api.context import CLIENT_ID, CLIENTS, RUNTIME
from service.api.envelope import render_for
from service.errors import UNAVAILABLE_STATUS, ApiError, VeriflowError, as_api_error
from service.store.health import RETRY_AFTER_S, STORE_FAULTS, describe, store_fault

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("veriflow.api")

PUBLIC_V1 = ("/v1/catalog", "/v1/providers/")
# A redeemed result carries the person's data, which must not outlive the verification for
# long: its replay is kept (sealed) just long enough for a client's retry.
PERSONAL_DATA_REPLAY_TTL_S = 60
PERSONAL_DATA_ROUTES = frozenset({"/v1/results"})
# While the first request runs, its key is held for a short lease renewed while it works
# (`idempotency.lease_s`): a process that dies mid-request releases it within the lease.
# Answers are kept `idempotency.ttl_s`.
TOO_MANY = 429


@web.middleware
async def api_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What every request goes through around its handler, outermost first: its log context and
    its latency, the error envelope, the caller's API key, idempotency when it sends a key.

    One middleware rather than one each: every middleware is a coroutine each request awaits
    and an exception raised through it, which on a step as short as a wrong code was a
    measurable part of its CPU (bench/README.md)."""
    started = time.perf_counter()
    status = 500
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(method=request.method, path=request.path)
    try:
        response = await _enveloped(request, handler)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[RUNTIME].metrics
        metrics.labelled(metrics.request_seconds, request.method, route, str(status)).observe(
            time.perf_counter() - started)


async def _enveloped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer, its error rendered as the envelope of contract section 2."""
    try:
        authenticate(request)
        key = request.headers.get("Idempotency-Key")
        if key is not None and request.method == "POST" and CLIENT_ID in request:
            response = await idempotent(request, handler, key)
        else:
            response = await handler(request)
    except VeriflowError as exc:
        response = render_for(request, as_api_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:  # noqa: PLR2004 - redirects are not errors
            raise
        return render_for(request, http_refusal(exc))
    except Exception as exc:
        fault = store_fault(exc)  # a store fault is 503 9999 and one short line, never a traceback
        if fault is None:
            log.exception("api.unhandled")
            return render_for(request, ApiError(Code.INTERNAL_ERROR))
        log.warning("api.store_unavailable", error=describe(exc))
        response = render_for(request, as_api_error(fault))
    if response.status == UNAVAILABLE_STATUS and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def http_refusal(exc: web.HTTPException) -> ApiError:
    """aiohttp's own refusals, named for what they are: no such route (3007), a method the route
    does not take (3008, keeping the Allow header), anything else (a body too large) 3001."""
    if isinstance(exc, web.HTTPNotFound):
        return ApiError(Code.ROUTE_NOT_FOUND)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiError(Code.METHOD_NOT_ALLOWED, headers={"Allow": allowed},
                        description=f"{exc.method} is not allowed here; allowed: {allowed}")
    return ApiError(Code.INVALID_REQUEST, http_status=exc.status, description=exc.reason)


def authenticate(request: web.Request) -> None:
    """The calling client, from its API key, on every /v1/ route but the public ones."""
    if request.path.startswith("/v1/") and not request.path.startswith(PUBLIC_V1):
        client_id = request.app[CLIENTS].get(_key_digest(request))
        if client_id is None:
            raise ApiError(Code.BAD_API_KEY)
        request[CLIENT_ID] = client_id
        structlog.contextvars.bind_contextvars(client_id=client_id)


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


async def idempotent(request: web.Request, handler: Handler, key: str) -> web.StreamResponse:
    """The same Idempotency-Key with the same body answers the first response again."""
    validation.idempotency_key(key)  # present: 1 to 255 printable ASCII characters, else 400 3001
    rt = request.app[RUNTIME]
    store = rt.store
    slot = store.keys.idempotency(request[CLIENT_ID], key)
    fingerprint = rt.secrets.request_fingerprint(request.path, await request.read())
    pending = held_keys.pending(fingerprint)
    found = await store.hold_idempotency_key(slot, pending, rt.settings.idempotency.lease_s)
    if found is not None:
        stored = held_keys.decode(found)
        if not hmac.compare_digest(stored.fingerprint, fingerprint):
            raise ApiError(Code.IDEMPOTENCY_MISMATCH)
        if stored.status is None:
            raise ApiError(Code.IDEMPOTENCY_IN_PROGRESS)
        return web.Response(body=held_keys.answer_body(stored, rt.secrets, slot), status=stored.status,
                            content_type="application/json")
    lease = held_keys.Lease(store, slot, pending, rt.settings.idempotency.lease_s)
    try:
        response = await _rendered(request, handler)
    except BaseException:
        await lease.release()
        with contextlib.suppress(*STORE_FAULTS):  # else the lease runs out
            await store.drop_idempotency_key(slot)  # nothing was answered: the key may be used again
        raise
    await lease.release()
    if response.status >= 500 or response.status == TOO_MANY or not isinstance(response, web.Response):  # noqa: PLR2004
        # A 429 (an abuse limit's 3006 above all) is not kept: the same key may be retried later.
        await store.drop_idempotency_key(slot)
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    # Sealed: answers carry personal data (results) and secrets (an mOTP enrolment's URI).
    record = held_keys.answer(fingerprint, response.status, body, rt.secrets, slot)
    keep_s = (PERSONAL_DATA_REPLAY_TTL_S if request.path in PERSONAL_DATA_ROUTES
              else rt.settings.idempotency.ttl_s)
    await store.keep_idempotent_answer(slot, record, keep_s)
    return response


async def _rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors are answers too: render them here so that they are replayed like successes."""
    try:
        return await handler(request)
    except VeriflowError as exc:
        return render_for(request, as_api_error(exc))
