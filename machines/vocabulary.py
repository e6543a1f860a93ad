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
        return self not in {Status.PENDING, Status.VERIFIED}


class TimerKind(StrEnum):
    SESSION = "session"  # the verification's own deadline (session_ttl_s)
    RESULT = "result"  # a verified key token's redemption deadline (result_ttl_s)


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
