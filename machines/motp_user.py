"""The mOTP user: enrolment, failure count, lock and last accepted time step.

Unlike a verification, this state outlives a transaction: wrong codes count across
verifications, so the count lives here, and every change to it is compare-and-set on
`version` together with the verification that caused it. Pure: no I/O, no cryptography
(the shell seals the secret and hashes the name and phone before they get here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MotpUser:
    ref: str  # the digest of (client id, user id) that names the user's key
    client_id: str
    version: int
    secret: str  # the TOTP secret, sealed; bound to `ref` and `device`
    device: int  # registrations so far: only the newest device's secret is kept
    name_hash: str  # keyed hashes: enough to compare, nothing to read back
    phone_hash: str
    registered_at: int  # Unix ms
    failures: int = 0  # consecutive wrong codes
    locked_at: int | None = None
    last_step: int = -1  # the last accepted TOTP time step: it and older ones are refused
    unlocked_at: int | None = None

    @property
    def locked(self) -> bool:
        return self.locked_at is not None


def registered(
    before: MotpUser | None, *, ref: str, client_id: str, sealed_secret: str, name_hash: str,
    phone_hash: str, now_ms: int,
) -> MotpUser:
    """A (new) device for the user. The failure count and the last accepted step carry over:
    registering again must not reset the lockout, nor make an accepted code acceptable again."""
    if before is None:
        return MotpUser(ref=ref, client_id=client_id, version=0, secret=sealed_secret, device=1,
                        name_hash=name_hash, phone_hash=phone_hash, registered_at=now_ms)
    return dataclasses.replace(before, secret=sealed_secret, device=next_device(before),
                               name_hash=name_hash, phone_hash=phone_hash, registered_at=now_ms)


def next_device(before: MotpUser | None) -> int:
    return (before.device if before else 0) + 1


def accepted(user: MotpUser, step: int) -> MotpUser:
    """A right code: the count starts again, and this step can never be accepted again."""
    return dataclasses.replace(user, failures=0, last_step=step)


def failed(user: MotpUser, max_failures: int, now_ms: int) -> MotpUser:
    """A wrong code counts; the `max_failures`-th consecutive one locks the user."""
    failures = user.failures + 1
    return dataclasses.replace(user, failures=failures, locked_at=now_ms if failures >= max_failures else None)


def unlocked(user: MotpUser, now_ms: int) -> MotpUser:
    """The limit reset after an identity verification (also for a user who was not locked)."""
    return dataclasses.replace(user, failures=0, locked_at=None, unlocked_at=now_ms)


_FIELDS = {f.name: f for f in dataclasses.fields(MotpUser)}
_INT_FIELDS = {name for name, f in _FIELDS.items() if "int" in str(f.type)}


def to_fields(user: MotpUser) -> dict[str, str]:
    return {name: str(getattr(user, name)) for name in _FIELDS if getattr(user, name) is not None}


def changed_fields(before: MotpUser | None, after: MotpUser) -> tuple[dict[str, str], list[str]]:
    """What a commit writes (`HSET`) and deletes (`HDEL`); `version` is the script's to write."""
    new = to_fields(after)
    old = to_fields(before) if before is not None else {}
    written = {k: v for k, v in new.items() if old.get(k) != v and k != "version"}
    return written, [k for k in old if k not in new]


def from_fields(raw: dict[Any, Any]) -> MotpUser:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name in _FIELDS:
            text = value.decode() if isinstance(value, bytes) else value
            values[name] = int(text) if name in _INT_FIELDS else text
    return MotpUser(**values)
