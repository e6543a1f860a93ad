"""The verification object of contract section 3, built from a stored record."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.crypto import Secrets


def rfc3339(ms: int | None) -> str | None:
    return None if ms is None else _rfc3339(ms)


@functools.lru_cache(maxsize=4096)  # a verification's times are shown at every step of it
def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verification_view(record: Verification, secrets: Secrets | None) -> dict[str, Any]:
    """The public view. The key token is derived, and shown only while status is verified."""
    expires = record.result_expires_at if record.status is Status.VERIFIED else record.expires_at
    view: dict[str, Any] = {
        "id": record.id,
        "channel": record.channel.value,
        "tx_id": record.tx_id,
        "status": record.status.value,
        "state": record.state,
        "last_code": record.last_code,
        "last_detail_code": record.last_detail_code,
        "attempts_left": record.attempts_left,
        "resends_left": record.resends_left,
        "fallback": record.fallback.split(",") if record.fallback else [],
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(expires),
    }
    if record.last_variant is not None:
        view["last_variant"] = record.last_variant  # the catalog row of last_code (2910/code_mismatch)
    if record.display_code is not None and record.channel is Channel.ARS:
        view["display_code"] = record.display_code  # the digits the user keys into the call
    if record.status is Status.VERIFIED and record.verified_at is not None and secrets is not None:
        view["key_token"] = secrets.key_token(record.id, record.verified_at)
    return view
