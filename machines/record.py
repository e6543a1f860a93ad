"""The stored verification: one flat record per verification, the same shape for every channel.

`to_fields`/`from_fields` map it to and from a Redis hash (strings only). Absent optional
fields are simply not stored, so a record costs only the bytes it uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from machines.vocabulary import Channel, Status


@dataclass(frozen=True, slots=True)
class Policy:
    """The caps and windows a decision applies, taken from configuration by the shell."""

    session_ttl_s: int
    result_ttl_s: int
    max_verify_attempts: int = 3
    max_resends: int = 3
    # ARS and PASS (the SMS policy leaves them at their defaults)
    push_timeout_s: int = 0
    fallback: tuple[tuple[str, frozenset[str]], ...] = ()  # (channel, the codes that offer it)


@dataclass(frozen=True, slots=True)
class Verification:
    id: str
    client_id: str
    channel: Channel
    state: str
    status: Status
    version: int
    definition: str  # the hash of the machine definition that wrote this record
    created_at: int  # all times are Unix milliseconds
    expires_at: int = 0  # the session deadline
    tx_id: str | None = None
    callback_url: str | None = None
    service_name: str | None = None
    subject: str | None = None  # sealed personal data; deleted when the verification ends
    last_code: str | None = None
    last_detail_code: str | None = None
    attempts_left: int | None = None
    resends_left: int | None = None
    code_generation: int = 0  # how many codes were sent; a code is bound to its generation
    code_hash: str | None = None
    verified_at: int | None = None
    result_expires_at: int | None = None
    ended_at: int | None = None
    fallback: str | None = None  # comma-separated channels the verification may switch to
    motp_user: str | None = None  # mOTP: the ref of the user it verifies (its key, in its slot)
    # Fields of the ARS and PASS channels:
    call_generation: int = 0  # ARS calls placed; a provider report names the call it is about
    display_code: str | None = None  # the digits of the current call, shown on the client's screen
    push_generation: int = 0  # PASS pushes sent
    push_expires_at: int | None = None  # the current push's answer deadline
    # Providers (appended): the id of the provider serving this verification's calls, pushes or
    # upstream-checked codes (only its events act on it), and the upstream's id of the current code.
    provider: str | None = None
    upstream_id: str | None = None

    @property
    def is_live(self) -> bool:
        return not self.status.is_terminal


_FIELDS = {f.name: f for f in dataclasses.fields(Verification)}
_INT_FIELDS = {
    name for name, f in _FIELDS.items() if "int" in str(f.type)
}


# A field at its default is not stored (reading fills the default in): every live
# verification is a hash in Redis, and most channel fields are zero for most of them.
_DEFAULTS = {f.name: f.default for f in _FIELDS.values() if f.default is not dataclasses.MISSING}


def to_fields(record: Verification) -> dict[str, str]:
    """The record as a Redis hash: every value that is not its field's default, as a string."""
    out: dict[str, str] = {}
    for name in _FIELDS:
        value = getattr(record, name)
        if value is not None and (name not in _DEFAULTS or value != _DEFAULTS[name]):
            out[name] = str(value)
    return out


def changed_fields(before: Verification | None, after: Verification) -> tuple[dict[str, str], list[str]]:
    """What a commit must write (`HSET`) and delete (`HDEL`) to turn `before` into `after`."""
    new = to_fields(after)
    if before is None:
        return new, []
    old = to_fields(before)
    written = {k: v for k, v in new.items() if old.get(k) != v}
    deleted = [k for k in old if k not in new]
    return written, deleted


def from_fields(raw: dict[Any, Any]) -> Verification:
    """Rebuild a record from a Redis hash (bytes or str keys and values)."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name not in _FIELDS:
            continue  # a field of a newer definition: ignored by this one
        text = value.decode() if isinstance(value, bytes) else value
        values[name] = int(text) if name in _INT_FIELDS else text
    values["channel"] = Channel(values["channel"])
    values["status"] = Status(values["status"])
    return Verification(**values)
