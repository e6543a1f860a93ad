"""PortOne (iamport) certification SMS-OTP, a `CodeUpstream`: PortOne checks the subscriber with
the carrier (through Danal), draws the code, sends it by SMS and checks it.

The wire format is PortOne's V1 REST API (host api.iamport.kr), as its reference documents it
(the swagger of the developer centre: operations getToken, requestOTP and confirmOTP):

    POST /users/getToken                      {"imp_key", "imp_secret"}
      -> {"code": 0, "message": null, "response": {"access_token", "now", "expired_at"}}
    POST /certifications/otp/request          Authorization: Bearer <access_token>
      {"name", "phone", "birth", "gender_digit", "carrier", "is_mvno", "company", "merchant_uid", "pg"}
      -> {"code": 0, "message": "", "response": {"imp_uid"}}
    POST /certifications/otp/confirm/{imp_uid}  Authorization: Bearer <access_token>
      {"otp"}
      -> {"code": 0, "message": "", "response": {"imp_uid", …, "certified": true, …}}

Every answer is that envelope: `code` 0 means done; any other `code` means "read `message`".
A token lives 30 minutes (`expired_at - now`, both PortOne's clock); an expired or unknown token
is answered 401. This adapter keeps one token, refreshes it `refresh_margin_s` before it
expires (one refresh shared by concurrent callers) and, on a 401, refreshes it once more and
resends; a second 401 is a `ProviderError`.

The carrier names are PortOne's `carrier` enum for requestOTP: SKT, KT, LGT, with `is_mvno` for
a budget-carrier (MVNO) line on one of them (the swagger and the request page). PortOne's own
certification window (`IMP.certification`) takes "KTF" for KT, as PortOne's support says; the
REST enum has KT only, so a "KTF" is sent as KT, and veriflow's "LGU+" as LGT.

`birth` is sent as YYYYMMDD, as the request page's field table says (its swagger text says
YYMMDD; PortOne strips every non-digit).

How PortOne answers a code that does not match is not documented (confirmOTP documents 400:
otp missing or already confirmed, 401, 404: no request for that imp_uid, 500: a Danal error).
This adapter reads a well-formed answer with `code != 0` (or `certified: false`) as the
upstream having checked the code and said no: the carrier-side mismatch, the catalog's second
2910 row. A mismatch PortOne reported as a 500 would be a `ProviderError` here.

No secret, token, code or personal data is logged or put in an exception: log lines carry the
operation, the HTTP status and PortOne's `code` only (PortOne's `message` may quote the input).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal, TypeGuard
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from machines.events import Refusal
from service.errors import ProviderError
from service.providers.ports import Subscriber

log = structlog.get_logger("veriflow.providers.portone")

DEFAULT_BASE_URL: Final = "https://api.iamport.kr"

Operation = Literal["token", "request", "confirm"]


class Body(enum.Enum):
    """What an answer's body is, once read (OK, REFUSED, NOT_ENVELOPE), or a pattern of the table."""

    OK = "the envelope with code 0 and the documented response"
    REFUSED = "the envelope with code != 0 (confirm: or `certified: false`)"
    NOT_ENVELOPE = "not PortOne's envelope: not JSON, no integer code, or code 0 without its response"
    ENVELOPE = "pattern: OK or REFUSED"
    ANY = "pattern: any body"


class Outcome(enum.Enum):
    SUCCESS = "success"
    REFRESH = "refresh the token once and resend; a second 401 is a ProviderError"
    ERROR = "ProviderError: retry later"


@dataclass(frozen=True, slots=True)
class Row:
    operation: Operation
    status: HTTPStatus | None  # None: any status
    body: Body
    outcome: Outcome | Refusal
    reason: str


MISMATCH: Final = Refusal("2910", variant="code_mismatch")

# The mapping: the first row that matches an answer decides it; each operation ends with a row
# that matches anything. No answer within `timeout_s`, or no connection, is a ProviderError too.
MAPPING: Final[tuple[Row, ...]] = (
    Row("token", HTTPStatus.OK, Body.OK, Outcome.SUCCESS,
        "the token and its lifetime (expired_at - now, on PortOne's clock)"),
    Row("token", HTTPStatus.UNAUTHORIZED, Body.ANY, Outcome.ERROR,
        "documented: imp_key/imp_secret refused; configuration, never the user's doing"),
    Row("token", None, Body.ANY, Outcome.ERROR,
        "anything else (code != 0, 5xx, a body without the token): no token, retry later"),

    Row("request", HTTPStatus.OK, Body.OK, Outcome.SUCCESS,
        "the subject checked out and the SMS is on its way; response.imp_uid names it"),
    Row("request", HTTPStatus.OK, Body.REFUSED, Refusal("2910"),
        "PortOne answered but refused the subject (code != 0): the carrier's subscriber "
        "(identity) check failed, the first 2910 row; trying again will not change it"),
    Row("request", HTTPStatus.BAD_REQUEST, Body.ANY, Refusal("9998"),
        "documented: some of the subject's data is missing or invalid; the request itself is "
        "wrong, so 9998 (required data missing), not a retry"),
    Row("request", HTTPStatus.UNAUTHORIZED, Body.ANY, Outcome.REFRESH,
        "documented: the token is missing or invalid (expired or revoked early)"),
    Row("request", HTTPStatus.NOT_FOUND, Body.ANY, Outcome.ERROR,
        "not documented for this route: a wrong base URL or a proxy; configuration"),
    Row("request", HTTPStatus.INTERNAL_SERVER_ERROR, Body.ANY, Outcome.ERROR,
        "documented: a Danal server error while processing; retry later"),
    Row("request", None, Body.ANY, Outcome.ERROR,
        "any other answer (a 200 without imp_uid, 502/503/504, not JSON) or none: retry later"),

    Row("confirm", HTTPStatus.OK, Body.OK, Outcome.SUCCESS,
        "certified: the code is the one PortOne sent"),
    Row("confirm", HTTPStatus.OK, Body.REFUSED, MISMATCH,
        "PortOne checked the code and did not certify it: the carrier-side code mismatch, the "
        "second 2910 row (retryable: the user may type the code again)"),
    Row("confirm", HTTPStatus.BAD_REQUEST, Body.ANY, Refusal("4018"),
        "documented: otp missing or the request already confirmed; the otp is always sent, so "
        "this confirms a finished request again: 4018 (checked again after completion)"),
    Row("confirm", HTTPStatus.UNAUTHORIZED, Body.ANY, Outcome.REFRESH,
        "documented: the token is missing or invalid (expired or revoked early)"),
    Row("confirm", HTTPStatus.NOT_FOUND, Body.ENVELOPE, Refusal("4018"),
        "documented: no request for this imp_uid (unknown or timed out); PortOne will never "
        "find it, so 4018 (no verification request found when the code is checked)"),
    Row("confirm", HTTPStatus.NOT_FOUND, Body.NOT_ENVELOPE, Outcome.ERROR,
        "a 404 without PortOne's envelope is not PortOne's answer: a wrong base URL or a proxy"),
    Row("confirm", HTTPStatus.INTERNAL_SERVER_ERROR, Body.ANY, Outcome.ERROR,
        "documented: a Danal server error while processing; retry later"),
    Row("confirm", None, Body.ANY, Outcome.ERROR,
        "any other answer (a 200 without `certified`, 502/503/504, not JSON) or none: retry later"),
)

# veriflow's carrier names (and PortOne's browser-SDK and budget-carrier spellings) to the
# `carrier` of requestOTP; an `_MVNO` suffix also sets is_mvno.
CARRIERS: Final[dict[str, str]] = {
    "SKT": "SKT",
    "KT": "KT",
    "KTF": "KT",
    "LGT": "LGT",
    "LGU+": "LGT",
    "LGU": "LGT",
}
MVNO_SUFFIX: Final = "_MVNO"


def portone_carrier(carrier: str, *, is_mvno: bool) -> tuple[str, bool] | None:
    """PortOne's (carrier, is_mvno) for veriflow's; None for a carrier PortOne cannot take."""
    name = carrier.strip().upper()
    if name.endswith(MVNO_SUFFIX):
        name, is_mvno = name.removesuffix(MVNO_SUFFIX), True
    mapped = CARRIERS.get(name)
    return None if mapped is None else (mapped, is_mvno)


def row_for(operation: Operation, status: int, body: Body) -> Row:
    """The first row of MAPPING that matches the answer."""
    for row in MAPPING:
        if row.operation != operation or (row.status is not None and row.status != status):
            continue
        if row.body in {Body.ANY, body} or (row.body is Body.ENVELOPE and body is not Body.NOT_ENVELOPE):
            return row
    msg = f"MAPPING has no catch-all row for {operation}"
    raise AssertionError(msg)


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_body(response: dict[str, Any]) -> Body:
    token, now, expires = response.get("access_token"), response.get("now"), response.get("expired_at")
    if isinstance(token, str) and token and _integer(now) and _integer(expires) and expires > now:
        return Body.OK
    return Body.NOT_ENVELOPE  # a token already expired is nonsense too


def _request_body(response: dict[str, Any]) -> Body:
    imp_uid = response.get("imp_uid")
    return Body.OK if isinstance(imp_uid, str) and imp_uid else Body.NOT_ENVELOPE


def _confirm_body(response: dict[str, Any]) -> Body:
    certified = response.get("certified")
    if certified is True:
        return Body.OK
    return Body.REFUSED if certified is False else Body.NOT_ENVELOPE


RESPONSES: Final[dict[Operation, Callable[[dict[str, Any]], Body]]] = {
    "token": _token_body,
    "request": _request_body,
    "confirm": _confirm_body,
}


def classify(operation: Operation, payload: Any) -> Body:
    """Read an answer's body against the documented envelope of `operation`."""
    if not isinstance(payload, dict) or not _integer(payload.get("code")):
        return Body.NOT_ENVELOPE
    if payload["code"] != 0:
        return Body.REFUSED
    response = payload.get("response")
    return RESPONSES[operation](response) if isinstance(response, dict) else Body.NOT_ENVELOPE


@dataclass(frozen=True, slots=True, eq=False)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # on the adapter's clock


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: Any


class PortOneProvider:
    """`CodeUpstream` over PortOne's certification SMS-OTP API."""

    def __init__(
        self,
        *,
        imp_key: str,
        imp_secret: str,
        session: aiohttp.ClientSession,
        timeout_s: float,
        pg: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        default_company: str | None = None,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`pg`: "danal.{store id}" when several Danal store ids are in use; `default_company`:
        the service name the SMS shows when a verification has none; `timeout_s` bounds each
        HTTP exchange (a call makes at most four: token, send, token again, resend)."""
        self.base_url = base_url.rstrip("/")
        self._imp_key = imp_key
        self._imp_secret = imp_secret
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.pg = pg
        self.default_company = default_company
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PortOneProvider(base_url={self.base_url!r})"

    # ---- the port ----

    async def request_code(self, reference: str, subscriber: Subscriber, service_name: str | None) -> str | Refusal:
        mapped = portone_carrier(subscriber.carrier, is_mvno=subscriber.is_mvno)
        if mapped is None:
            log.info("portone.carrier_unknown", reference=reference, carrier=subscriber.carrier)
            return Refusal("9998")
        carrier, is_mvno = mapped
        body: dict[str, Any] = {
            "name": subscriber.name,
            "phone": subscriber.phone,
            "birth": subscriber.birth,
            "gender_digit": subscriber.gender_digit,
            "carrier": carrier,
            "is_mvno": is_mvno,
            "merchant_uid": reference,
        }
        company = service_name or self.default_company
        if company:
            body["company"] = company
        if self.pg:
            body["pg"] = self.pg
        outcome, answer = await self._call("request", "/certifications/otp/request", body, reference)
        if isinstance(outcome, Refusal):
            return outcome
        imp_uid: str = answer.payload["response"]["imp_uid"]
        return imp_uid

    async def confirm_code(self, imp_uid: str, code: str) -> Refusal | None:
        path = "/certifications/otp/confirm/" + quote(imp_uid, safe="")
        outcome, _ = await self._call("confirm", path, {"otp": code}, imp_uid)
        return outcome if isinstance(outcome, Refusal) else None

    # ---- one authorised exchange, with the 401 refresh ----

    async def _call(self, operation: Operation, path: str, body: dict[str, Any],
                    reference: str) -> tuple[Refusal | None, _Answer]:
        """Send with the current token; on a 401 refresh it once and resend. Returns the
        refusal (None: success) and the answer; raises ProviderError for the rest."""
        token = await self._current_token()
        answer = await self._post(operation, path, body, token.value)
        row = row_for(operation, answer.status, classify(operation, answer.payload))
        if row.outcome is Outcome.REFRESH:
            log.info("portone.token_rejected", operation=operation, reference=reference)
            token = await self._replace_token(token)
            answer = await self._post(operation, path, body, token.value)
            row = row_for(operation, answer.status, classify(operation, answer.payload))
            if row.outcome is Outcome.REFRESH:
                log.warning("portone.unauthorized", operation=operation, reference=reference)
                msg = f"PortOne {operation}: 401 again with a fresh token"
                raise ProviderError(msg)
        portone_code = answer.payload.get("code") if isinstance(answer.payload, dict) else None
        if row.outcome is Outcome.ERROR:
            log.warning("portone.error", operation=operation, reference=reference, status=answer.status,
                        portone_code=portone_code if _integer(portone_code) else None)
            msg = f"PortOne {operation} answered HTTP {answer.status}"
            raise ProviderError(msg)
        if isinstance(row.outcome, Refusal):
            log.info("portone.refused", operation=operation, reference=reference, status=answer.status,
                     portone_code=portone_code if _integer(portone_code) else None,
                     refusal=row.outcome.code, variant=row.outcome.variant)
            return row.outcome, answer
        return None, answer

    async def _post(self, operation: Operation, path: str, body: dict[str, Any], token: str | None) -> _Answer:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        try:
            async with self.session.post(self.base_url + path, json=body, headers=headers,
                                         timeout=self.timeout, allow_redirects=False) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("portone.unreachable", operation=operation, error=exc.__class__.__name__)
            msg = f"PortOne {operation} unreachable: {exc.__class__.__name__}"
            raise ProviderError(msg) from exc
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        return _Answer(status, payload)

    # ---- the token ----

    async def _current_token(self) -> _Token:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        async with self._lock:  # concurrent callers wait for one refresh
            token = self._token
            if token is not None and self._clock() < token.refresh_at:
                return token
            self._token = None
            self._token = await self._fetch_token()
            return self._token

    async def _replace_token(self, rejected: _Token) -> _Token:
        """After a 401 with `rejected`: a new token, unless another caller already replaced it."""
        async with self._lock:
            token = self._token
            if token is not None and token is not rejected and self._clock() < token.refresh_at:
                return token
            self._token = None
            self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> _Token:
        answer = await self._post("token", "/users/getToken",
                                  {"imp_key": self._imp_key, "imp_secret": self._imp_secret}, None)
        row = row_for("token", answer.status, classify("token", answer.payload))
        if row.outcome is not Outcome.SUCCESS:
            log.warning("portone.token_refused", status=answer.status)
            msg = f"PortOne getToken answered HTTP {answer.status}"
            raise ProviderError(msg)
        response = answer.payload["response"]
        lifetime = int(response["expired_at"]) - int(response["now"])
        log.info("portone.token_issued", lifetime_s=lifetime)
        return _Token(str(response["access_token"]), self._clock() + max(0.0, lifetime - self.refresh_margin_s))
