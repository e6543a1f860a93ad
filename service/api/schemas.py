"""The request and answer definitions of the `/v1` API, in one place.

Requests are decoded through these msgspec types (`decode`), which check types, required fields,
lengths and patterns and name the field of a failure (400 `3001`); `service.api.validation` then
applies the rules a type cannot state (a real date, the century of the gender digit, a callback
host that may be called, an IP address in canonical form) and normalises. `service.api.openapi`
publishes the same types as JSON Schema (`msgspec.json.schema_components`).

The patterns are written for both readers: JSON Schema's (ECMA 262, where `$` is the end of the
string) and Python's `re.search` here. Python's `$` also matches before a final newline, so the
server's own checks (`validation`) use `fullmatch` on top: "01012345678\\n" is refused by both.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct, field

from machines.vocabulary import Channel

# ---- limits the server enforces ----
MAX_TEXT = 64
MAX_SERVICE_NAME = 40
MAX_URL = 2048
MAX_IP_TEXT = 45
MAX_TOKEN = 256
MAX_QUERY = 128
MAX_IDEMPOTENCY_KEY = 255


def _hyphens(template: str) -> str:
    """The server drops hyphens from phones and birth dates: any number may follow each digit."""
    return "^-*" + re.sub(r"\[[^\]]*\]|[0-9]", lambda m: m.group(0) + "-*", template) + "$"


_MONTH_DAY = ("(?:(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])(?:29|30)"
              "|(?:0[13578]|1[02])31)")
# Real dates only (29 February in leap years), and only past years: a birth date in the future is
# refused, and the pattern stops at the last full year (a date of this year before today is
# accepted by the server too).
_BIRTH_1900S = f"(?:19[0-9][0-9]{_MONTH_DAY}|19(?:0[48]|[2468][048]|[13579][26])0229)"
_BIRTH_2000S = f"(?:20(?:[01][0-9]|2[0-5]){_MONTH_DAY}|20(?:0[048]|1[26]|2[04])0229)"
BIRTH_1900S = _hyphens(_BIRTH_1900S)
BIRTH_2000S = _hyphens(_BIRTH_2000S)
BIRTH = _hyphens(f"(?:{_BIRTH_1900S}|{_BIRTH_2000S})")
PHONE = _hyphens("01[016789][0-9][0-9][0-9][0-9][0-9][0-9][0-9](?:[0-9])?")
CARRIER = r"^(?:[Ss][Kk][Tt]|[Kk][Tt]|[Ll][Gg](?:[Tt]|[Uu]\+))$"
NON_BLANK = r"\S"  # somewhere a character that is not white space (the server strips the rest)
CODE_DIGITS = r"^[0-9]{4,10}$"
VERIFICATION_ID = r"^[0-9a-f]{28}$"
PROVIDER_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# Printable ASCII, not only spaces (HTTP drops the spaces around a header value).
IDEMPOTENCY_KEY = r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$"
# The callback URLs the service always accepts: http(s) with a DNS name (a name is judged on
# connection). IP literals of public addresses, ports and queries are accepted as well; addresses
# on loopback, private or link-local networks and localhost names are refused (400 3001).
CALLBACK_URL = r"^https?://[a-z][a-z0-9]{0,30}(?:\.[a-z][a-z0-9]{0,30}){0,3}\.[a-z]{2,8}(?:/[A-Za-z0-9._~-]{0,40}){0,4}$"

GENDERS_1900S = ("1", "2", "5", "6")
GENDERS_2000S = ("3", "4", "7", "8")


def _either(values: tuple[str, ...]) -> list[str | int]:
    return [*values, *(int(value) for value in values)]


Text = Annotated[str, Meta(max_length=MAX_TEXT, pattern=NON_BLANK)]
Name = Annotated[str, Meta(max_length=MAX_TEXT, pattern=NON_BLANK, examples=["홍길동"])]
Birth = Annotated[str, Meta(pattern=BIRTH, examples=["19900101"], description=(
    "YYYYMMDD (hyphens allowed), ASCII digits, a real date not in the future"))]
Phone = Annotated[str, Meta(pattern=PHONE, examples=["010-1234-5678"], description=(
    "a Korean mobile number, with or without hyphens, ASCII digits"))]
Carrier = Annotated[str, Meta(pattern=CARRIER, examples=["SKT"], description=(
    "SKT, KT or LGT (LGU+ reads as LGT), in any letter case"))]
Gender = Annotated[
    Literal["1", "2", "3", "4", "5", "6", "7", "8", 1, 2, 3, 4, 5, 6, 7, 8],
    Meta(examples=["1"], description=(
        "the 7th digit of the resident number; it names the century of birth: 1, 2, 5, 6 before "
        "2000, 3, 4, 7, 8 from 2000"))]
TxId = Annotated[str, Meta(max_length=MAX_TEXT, pattern=NON_BLANK, description=(
    "the client's own id; one live verification per tx_id"))]
ServiceName = Annotated[str, Meta(max_length=MAX_SERVICE_NAME, pattern=NON_BLANK)]
# The server judges the URL itself (`check_callback_url`): the type checks the length, and the
# document publishes the pattern of the form always accepted.
CallbackUrl = Annotated[str, Meta(max_length=MAX_URL, extra_json_schema={"pattern": CALLBACK_URL},
                                  examples=["https://merchant.example.com/veriflow"], description=(
    "POSTed, signed, when the verification is verified or ends. The pattern is the form always "
    "accepted; a public IP literal, a port or a query are accepted too, a loopback, private or "
    "link-local address or a localhost name is 400 3001"))]
EndUserIp = Annotated[str, Meta(max_length=MAX_IP_TEXT, examples=["203.0.113.7"], extra_json_schema={
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}, description=(
    "the end user's IP address (IPv4 or IPv6), counted by the per_ip limit"))]
Token = Annotated[str, Meta(max_length=MAX_TOKEN, pattern=NON_BLANK)]
CodeText = Annotated[str, Meta(pattern=CODE_DIGITS, examples=["123456"])]
CodeNumber = Annotated[int, Meta(ge=1000, le=9_999_999_999)]


def _century_rule(*, optional: bool) -> dict[str, Any]:
    """Cross-field: the gender digit agrees with the birth century (contract section 2)."""
    pairs: list[dict[str, Any]] = [
        {"properties": {"birth": {"pattern": BIRTH_1900S}, "gender_digit": {"enum": _either(GENDERS_1900S)}}},
        {"properties": {"birth": {"pattern": BIRTH_2000S}, "gender_digit": {"enum": _either(GENDERS_2000S)}}},
    ]
    if optional:  # mOTP: either may be absent (or null); when both are given they agree
        pairs += [{"not": {"required": [name]}} for name in ("birth", "gender_digit")]
        pairs += [{"properties": {name: {"type": "null"}}, "required": [name]} for name in ("birth", "gender_digit")]
    return {"anyOf": pairs}


class Subject(Struct):
    """The person to verify."""

    json_schema_extra: ClassVar[dict[str, Any]] = _century_rule(optional=False)
    name: Name
    birth: Birth
    gender_digit: Gender
    phone: Phone
    carrier: Carrier
    is_mvno: bool = False


class MotpSubject(Struct):
    """mOTP: name and phone are required; the other fields are checked when given."""

    json_schema_extra: ClassVar[dict[str, Any]] = _century_rule(optional=True)
    name: Name
    phone: Phone
    birth: Birth | None = None
    gender_digit: Gender | None = None
    carrier: Carrier | None = None
    is_mvno: bool = False


class _Start(Struct, kw_only=True, tag_field="channel"):
    tx_id: TxId | None = None
    service_name: ServiceName | None = None
    callback_url: CallbackUrl | None = None
    end_user_ip: EndUserIp | None = None


class SmsStart(_Start, tag="sms"):
    """Start an SMS verification: a code is sent to the phone."""

    subject: Subject


class ArsStart(_Start, tag="ars"):
    """Start an ARS verification: the phone is called; the user keys the display_code."""

    subject: Subject


class PassStart(_Start, tag="pass"):
    """Start a PASS verification: a push to the PASS app."""

    subject: Subject


class MotpStart(_Start, tag="motp"):
    """Start an mOTP verification of a registered user."""

    motp_user_id: Annotated[str, Meta(max_length=MAX_TEXT, pattern=NON_BLANK, examples=["trainee-1"])]
    subject: MotpSubject


PersonStart = SmsStart | ArsStart | PassStart
StartBody = SmsStart | ArsStart | PassStart | MotpStart


class Confirm(Struct):
    """SMS and mOTP: the code the user received or reads; ARS and PASS: no code (asks whether the
    user has finished)."""

    code: CodeText | CodeNumber | None = None


class Fallback(Struct):
    channel: Annotated[Channel, Meta(description="a channel listed in the verification's `fallback`")]


class KeyToken(Struct):
    key_token: Annotated[Token, Meta(examples=["<key_token of a verified verification>"])]


class MotpEnrol(Struct):
    user_id: Annotated[str, Meta(max_length=MAX_TEXT, pattern=NON_BLANK, examples=["trainee-1"])]
    name: Name
    phone: Phone


class ProviderEvent(Struct):
    """An ARS call result or PASS push result, signed with the provider's secret."""

    event_id: Annotated[str, Meta(max_length=128, pattern=NON_BLANK)]
    type: Annotated[str, Meta(max_length=64, pattern=NON_BLANK, examples=["ars.call_result"],
                              description="ars.call_result or pass.push_result")]
    reference: Annotated[str, Meta(max_length=128, pattern=NON_BLANK, examples=["<verification id>:1"])]
    code: Annotated[str, Meta(max_length=16, pattern=NON_BLANK, examples=["2000"])]
    detail_code: Annotated[str, Meta(max_length=16, pattern=NON_BLANK)] | None = None


# ---- answers ----

Nullable = str | None
Status = Literal["pending", "verified", "completed", "failed", "expired", "canceled"]
Instant = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]


class Verification(Struct, kw_only=True):
    id: Annotated[str, Meta(pattern=VERIFICATION_ID)]
    channel: Channel
    tx_id: Nullable
    status: Status
    state: Annotated[str, Meta(description="the machine's own state name")]
    last_code: Nullable
    last_detail_code: Nullable
    attempts_left: int | None
    resends_left: int | None
    fallback: list[Channel]
    created_at: Instant
    expires_at: Instant | None
    last_variant: Annotated[str, Meta(description=(
        "only when last_code has several catalog rows: the row's variant (2910: code_mismatch)"))] | None = None
    display_code: Annotated[str, Meta(description="ARS only: the digits the user keys into the call")] | None = None
    key_token: Annotated[str, Meta(description="only while status is verified")] | None = None


class ErrorBody(Struct, kw_only=True):
    code: Annotated[str, Meta(examples=["4013"])]
    detail_code: Nullable
    message: Annotated[str, Meta(description="the customer message in the requested locale")]
    description: Annotated[str, Meta(description="English operator text; may change")]
    retryable: bool
    veriflow_code: Annotated[str, Meta(description=(
        "only for a client with a second error dialect: veriflow's own code, `code` being the "
        "dialect's where it has one"))] | None = None


class Error(Struct, kw_only=True):
    """Every error answer (4xx and 5xx)."""

    error: ErrorBody
    verification: Verification | None = None


class Person(Struct, kw_only=True):
    name: str
    birth: str
    gender_digit: str
    phone: str
    carrier: str
    is_mvno: bool
    channel: Channel
    verified_at: Instant | None


class Result(Struct):
    result: Person


class MotpUser(Struct, kw_only=True):
    user_id: str
    status: Literal["registered", "locked"]
    failures: int


class MotpEnrolment(MotpUser, kw_only=True):
    otpauth_uri: Annotated[str, Meta(examples=[
        "otpauth://totp/veriflow:trainee-1?secret=…&issuer=veriflow&algorithm=SHA1&digits=6&period=60"])]
    qr_svg: Annotated[str, Meta(description=(
        "the same URI as a QR code (SVG) for the authenticator app; shown once, in this answer only"))]


class Ack(Struct):
    status: Literal["applied", "ignored", "duplicate"]
    event_id: str | None


class AuditEvent(Struct, kw_only=True):
    at: Instant
    from_: Annotated[str | None, Meta(description="the machine state before; null for the creation")] = field(
        name="from")
    to: str
    trigger: Annotated[str, Meta(examples=["confirm"])]
    actor: Annotated[str, Meta(description="client, provider:<id> or timer (an expiry is always the timer's)")]
    code: Nullable
    detail_code: Nullable


class Events(Struct):
    events: list[AuditEvent]


class CatalogEntry(Struct, kw_only=True):
    code: str
    variant: str | None
    http_status: int
    retryable: bool
    channels: list[Channel]
    messages: dict[str, str]
    description: str
    detail_codes: dict[str, str]
    detail_codes_ko: dict[str, str]
    service_defined: bool


class CatalogBody(Struct):
    codes: list[CatalogEntry]


class LiveRow(Struct, kw_only=True):
    channel: Channel
    state: str
    status: Status | None
    count: Annotated[int, Meta(ge=1)]


class Live(Struct):
    total: int
    by_state: list[LiveRow]


class Messages(Struct):
    ko: str
    en: str


class OutcomeRow(Struct, kw_only=True):
    channel: Channel
    status: str
    code: Nullable
    count: Annotated[int, Meta(ge=1)]
    messages: Messages | None


class Outcomes(Struct, kw_only=True):
    since: Instant
    until: Instant
    by_code: list[OutcomeRow]


class ConsoleSummary(Struct, kw_only=True):
    client_id: str
    live: Live
    outcomes: Outcomes


class Diagram(Struct, kw_only=True):
    channel: Channel
    mermaid: str
    visited: list[str]
    path: list[list[str]]


class Found(Struct, kw_only=True):
    verification: Verification
    events: list[AuditEvent]
    diagram: Diagram


class ConsoleSearch(Struct, kw_only=True):
    query: str
    results: list[Found]


REQUESTS: tuple[Any, ...] = (StartBody, Confirm, Fallback, KeyToken, MotpEnrol, ProviderEvent)
ANSWERS: tuple[Any, ...] = (Verification, Error, Result, MotpUser, MotpEnrolment, Ack, Events, CatalogBody,
                            ConsoleSummary, ConsoleSearch)


class InvalidBodyError(ValueError):
    """A body the types refuse; the message names the field."""


FIELD_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")


def describe(error: msgspec.ValidationError) -> str:
    """msgspec's message, naming the field as the body spells it (`subject.phone`)."""
    match = FIELD_AT.match(str(error))
    what, path = (match["what"], match["path"] or "") if match else (str(error), "")
    where = path.lstrip(".").replace("[", ".").replace("]", "")
    missing = MISSING.match(what)
    if missing:
        name = f"{where}.{missing['name']}" if where else missing["name"]
        return f"{name} is required"
    return f"{where}: {what[0].lower()}{what[1:]}" if where else f"the body: {what[0].lower()}{what[1:]}"


def decode(body: Any, kind: Any) -> Any:
    """`body` (parsed JSON) as `kind`, or InvalidBodyError naming the field."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise InvalidBodyError(describe(exc)) from None


def components() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema by definition, components) as JSON Schema, with the cross-field rules."""
    kinds = (*REQUESTS, *ANSWERS)
    refs, schemas = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    for kind in (Subject, MotpSubject):
        schemas[kind.__name__].update(kind.json_schema_extra)
    by_kind = {_name(kind): ref for kind, ref in zip(kinds, refs, strict=True)}
    return by_kind, schemas


def _name(kind: Any) -> str:
    return "StartBody" if kind is StartBody else str(kind.__name__)
