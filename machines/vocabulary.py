"""Names shared by every channel: channels, coarse statuses, timer kinds and catalog codes."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    SMS = "sms"
    ARS = "ars"
    PASS = "pass"  # noqa: S105 - a channel name, not a password
    MOTP = "motp"


class Status(StrEnum):
    """The coarse, stable vocabulary clients read (`status` in the contract)."""

    PENDING = "pending"
    VERIFIED = "verified"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self not in _LIVE


_LIVE = frozenset({Status.PENDING, Status.VERIFIED})


class TimerKind(StrEnum):
    SESSION = "session"  # the verification's own deadline (session_ttl_s)
    RESULT = "result"  # a verified key token's redemption deadline (result_ttl_s)
    PUSH = "push"  # a PASS push's answer deadline (push_timeout_s)
    FALLBACK = "fallback"  # the end of the window in which a failed verification may switch channel


class Code(StrEnum):
    """Catalog codes the machines emit; the catalog in `config/` holds their texts."""

    SUCCESS = "2000"
    CARRIER_REFUSED = "2910"
    INVALID_REQUEST = "3001"
    RESULT_GONE = "4000"
    UNKNOWN_VERIFICATION = "4001"
    UNKNOWN_FOR_RESEND = "4003"
    DUPLICATE_TX_ID = "4007"
    WRONG_CODE = "4013"
    CARRIER_DATA_INVALID = "4016"
    NOT_CONFIRMABLE = "4018"
    KT_CORPORATE_LINK_PENDING = "4022"
    SKT_ADDON_PENDING = "4023"
    BAD_API_KEY = "4101"
    ALREADY_COMPLETED = "4150"
    TOO_MANY_ATTEMPTS = "4301"
    TOO_MANY_RESENDS = "4302"
    INTERNAL_ERROR = "9999"
    # mOTP (the FAQ's codes, and the service-defined ones for its two unnamed outcomes)
    MOTP_UNKNOWN_USER = "AP005"
    MOTP_REGISTRATION_LOCKED = "AP011"
    MOTP_MISMATCH = "AP901"
    MOTP_LOCKED = "AP902"
    # ARS (phone call) and PASS (app push; APP_ names, as PASS_ reads like a password to linters)
    ARS_NO_RESULT = "4500"
    ARS_CALL_IN_PROGRESS = "4501"
    ARS_ALREADY_CALLED = "4502"
    ARS_WRONG_DIGITS = "4602"
    APP_NOT_SUBSCRIBED = "6701"
    APP_NOT_FINISHED = "6702"
    APP_AUTH_FAILED = "6703"
    APP_DENIED = "6705"
    APP_TIMEOUT = "6706"
    APP_UNAVAILABLE = "6707"
    APP_UNDER_AGE = "6751"
    PUSH_FAILED = "6752"
    # service-defined
    IDEMPOTENCY_MISMATCH = "3002"
    IDEMPOTENCY_IN_PROGRESS = "3003"
    BAD_SIGNATURE = "3004"
    FALLBACK_NOT_OFFERED = "3005"
    RATE_LIMITED = "3006"  # over an abuse limit (contract section 9)
    ROUTE_NOT_FOUND = "3007"  # no route has this path (not 4001, an unknown verification)
    METHOD_NOT_ALLOWED = "3008"  # the route does not take this method (405 with Allow)
