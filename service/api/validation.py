"""Request bodies: decoded through the definitions of `service.api.schemas` (types, required
fields, lengths, patterns: the same the OpenAPI document publishes), then held to the rules a
type cannot state; every failure names the field (400 3001)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from machines.age import CENTURY
from machines.vocabulary import Channel
from service.api import schemas
from service.api.schemas import MAX_IP_TEXT, MAX_SERVICE_NAME, MAX_TEXT, MAX_TOKEN, MAX_URL, InvalidBodyError
from service.effects.callback_address import UndeliverableUrlError, check_callback_url
from service.errors import invalid
from service.providers.ports import Subscriber

# Digits are ASCII digits (contract section 2): `\d` and str.isdigit() also take other scripts'
# digits and full-width forms, and `$` matches before a trailing newline, so neither is used here.
PHONE = re.compile(r"01[016789][0-9]{7,8}", re.ASCII)
BIRTH = re.compile(r"[0-9]{8}", re.ASCII)
CODE = re.compile(r"[0-9]{4,10}", re.ASCII)
EARLIEST_BIRTH_YEAR = 1900  # nobody alive was born before: 9/0, the 1800s' gender digits, never agree
CARRIERS = {"SKT", "KT", "LGT", "LGU+"}


@dataclass(frozen=True, slots=True)
class StartRequest:
    channel: Channel
    subject: Subscriber
    tx_id: str | None
    service_name: str | None
    callback_url: str | None
    end_user_ip: str | None = None


def typed(body: Any, kind: Any) -> Any:
    """`body` through its definition in `service.api.schemas`, or 400 3001 naming the field."""
    try:
        return schemas.decode(body, kind)
    except InvalidBodyError as exc:
        raise invalid(str(exc)) from None


def object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    return body


def text(body: dict[str, Any], name: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise invalid(f"{name} must be a non-empty string of at most {limit} characters")
    return value.strip()


def phone_digits(value: Any, name: str = "subject.phone") -> str:
    number = "".join(ch for ch in value if ch != "-") if isinstance(value, str) else ""
    if not PHONE.fullmatch(number):
        raise invalid(f"{name} must be a Korean mobile number such as 010-1234-5678")
    return number


def birth_date(value: Any) -> str:
    raw = "".join(ch for ch in value if ch != "-") if isinstance(value, str) else ""
    try:
        born = date(int(raw[:4]), int(raw[4:6]), int(raw[6:8])) if BIRTH.fullmatch(raw) else None
    except ValueError:
        born = None
    if born is None or born > date.today() or born.year < EARLIEST_BIRTH_YEAR:  # noqa: DTZ011
        raise invalid("subject.birth must be a date YYYYMMDD")
    return raw


def gender_of_century(gender: str, birth: str) -> str:
    """The gender digit names the century of birth (source: 1/2/5/6 before 2000, 3/4/7/8 from 2000,
    9/0 before 1900); a birth date that is not of that century is 400 3001. Without a birth date
    (mOTP), only the digits of a century a birth date may be in are accepted."""
    century = CENTURY.get(gender)
    if century is None or century < EARLIEST_BIRTH_YEAR or (birth and int(birth[:4]) // 100 * 100 != century):
        raise invalid("subject.gender_digit must agree with the century of subject.birth: 1, 2, 5, 6 "
                      "before 2000, 3, 4, 7, 8 from 2000 (9 and 0, before 1900, are not accepted)")
    return gender


def subject(body: dict[str, Any]) -> Subscriber:
    raw = body.get("subject")
    if not isinstance(raw, dict):
        raise invalid("subject must be an object with name, birth, gender_digit, phone, carrier")
    gender = raw.get("gender_digit")
    if not (isinstance(gender, str | int) and str(gender) in CENTURY):
        raise invalid("subject.gender_digit must be the 7th digit of the resident number, 1 to 8")
    carrier = raw.get("carrier")
    if not isinstance(carrier, str) or carrier.upper() not in CARRIERS:
        raise invalid("subject.carrier must be SKT, KT or LGT")
    is_mvno = raw.get("is_mvno", False)
    if not isinstance(is_mvno, bool):
        raise invalid("subject.is_mvno must be true or false")
    name = text(raw, "name")
    assert name is not None  # noqa: S101 - required above
    birth = birth_date(raw.get("birth"))
    return Subscriber(
        name=name,
        birth=birth,
        gender_digit=gender_of_century(str(gender), birth),
        phone=phone_digits(raw.get("phone")),
        carrier=carrier.upper().replace("LGU+", "LGT"),
        is_mvno=is_mvno,
    )


def callback_url(body: dict[str, Any], *, allow_private: bool) -> str | None:
    url = text(body, "callback_url", required=False, limit=MAX_URL)
    if url is None:
        return None
    try:
        # Normalised as the HTTP client will read it; the normalised URL is what is kept and called.
        return check_callback_url(url, allow_private=allow_private)
    except UndeliverableUrlError as exc:
        raise invalid(f"callback_url cannot be called back: {exc}") from None


def end_user_ip(body: dict[str, Any]) -> str | None:
    """The optional end-user IP address a start is counted under (per_ip), in canonical form."""
    value = body.get("end_user_ip")
    if value is None:
        return None
    refused = invalid("end_user_ip must be an IPv4 or IPv6 address")
    if not isinstance(value, str) or not value.isascii() or len(value) > MAX_IP_TEXT:
        raise refused
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise refused from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # one end user, one address: ::ffff:192.0.2.1 is 192.0.2.1
    return address.compressed


def channel(body: dict[str, Any]) -> Channel:
    try:
        return Channel(str(body.get("channel")))
    except ValueError:
        raise invalid("channel must be one of sms, ars, pass, motp") from None


def start_request(raw: Any, *, allow_private: bool) -> StartRequest:
    body = object_body(raw)
    typed(body, schemas.PersonStart)
    return StartRequest(
        channel=channel(body),
        subject=subject(body),
        tx_id=text(body, "tx_id", required=False),
        service_name=text(body, "service_name", required=False, limit=MAX_SERVICE_NAME),
        callback_url=callback_url(body, allow_private=allow_private),
        end_user_ip=end_user_ip(body),
    )


def code(body: dict[str, Any]) -> str:
    value = body.get("code")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not CODE.fullmatch(value):
        raise invalid("code must be the digits the user received")
    return value


# ---- mOTP ----


@dataclass(frozen=True, slots=True)
class MotpStartRequest:
    user_id: str
    subject: Subscriber  # name and phone; the other fields are optional for mOTP ("" when absent)
    tx_id: str | None
    service_name: str | None
    callback_url: str | None
    end_user_ip: str | None = None


@dataclass(frozen=True, slots=True)
class MotpUserRequest:
    user_id: str
    name: str
    phone: str


def user_id(value: Any, name: str = "user_id") -> str:
    found = text({name: value}, name, limit=MAX_TEXT)
    assert found is not None  # noqa: S101 - required
    return found


def motp_subject(body: dict[str, Any]) -> Subscriber:
    """Name and phone are required; birth, gender_digit and carrier are checked when given."""
    raw = body.get("subject")
    if not isinstance(raw, dict):
        raise invalid("subject must be an object with at least name and phone")
    name = text(raw, "name")
    assert name is not None  # noqa: S101 - required
    gender = raw.get("gender_digit")
    if gender is not None and not (isinstance(gender, str | int) and str(gender) in CENTURY):
        raise invalid("subject.gender_digit must be the 7th digit of the resident number, 1 to 8")
    carrier = raw.get("carrier")
    if carrier is not None and (not isinstance(carrier, str) or carrier.upper() not in CARRIERS):
        raise invalid("subject.carrier must be SKT, KT or LGT")
    is_mvno = raw.get("is_mvno", False)
    if not isinstance(is_mvno, bool):
        raise invalid("subject.is_mvno must be true or false")
    birth = birth_date(raw["birth"]) if raw.get("birth") is not None else ""
    return Subscriber(
        name=name,
        birth=birth,
        gender_digit=gender_of_century(str(gender), birth) if gender is not None else "",
        phone=phone_digits(raw.get("phone")),
        carrier=carrier.upper().replace("LGU+", "LGT") if carrier is not None else "",
        is_mvno=is_mvno,
    )


def motp_start_request(body: dict[str, Any], *, allow_private: bool) -> MotpStartRequest:
    typed(body, schemas.MotpStart)
    return MotpStartRequest(
        user_id=user_id(body.get("motp_user_id"), "motp_user_id"),
        subject=motp_subject(body),
        tx_id=text(body, "tx_id", required=False),
        service_name=text(body, "service_name", required=False, limit=MAX_SERVICE_NAME),
        callback_url=callback_url(body, allow_private=allow_private),
        end_user_ip=end_user_ip(body),
    )


def motp_user_request(body: dict[str, Any]) -> MotpUserRequest:
    typed(body, schemas.MotpEnrol)
    name = text(body, "name")
    assert name is not None  # noqa: S101 - required
    return MotpUserRequest(user_id=user_id(body.get("user_id")), name=name,
                           phone=phone_digits(body.get("phone"), "phone"))


# ---- the other bodies ----


def confirm_body(body: dict[str, Any]) -> dict[str, Any]:
    """Any channel's confirm: a code, when given, is digits (SMS and mOTP require it)."""
    typed(body, schemas.Confirm)
    return body


def fallback_channel(body: dict[str, Any]) -> Channel:
    found: schemas.Fallback = typed(body, schemas.Fallback)
    return found.channel


def key_token(body: dict[str, Any]) -> str:
    typed(body, schemas.KeyToken)
    token = text(body, "key_token", limit=MAX_TOKEN)
    assert token is not None  # noqa: S101 - required
    return token


def provider_event(body: dict[str, Any]) -> schemas.ProviderEvent:
    event: schemas.ProviderEvent = typed(body, schemas.ProviderEvent)
    return schemas.ProviderEvent(
        event_id=event.event_id.strip(), type=event.type.strip(), reference=event.reference.strip(),
        code=event.code.strip(), detail_code=event.detail_code.strip() if event.detail_code else None)


def idempotency_key(value: str) -> str:
    if len(value) > schemas.MAX_IDEMPOTENCY_KEY or not IDEMPOTENCY_KEY.fullmatch(value):
        raise invalid(f"Idempotency-Key must be 1 to {schemas.MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return value


IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*", re.ASCII)
