"""The stored verification: one flat record per verification, the same shape for every channel.

`to_fields`/`from_fields` map it to and from a Redis hash (strings only). Absent optional
fields are simply not stored, so a record costs only the bytes it uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet
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


@dataclass(frozen=True, eq=False)
class Verification:
    """Its fields live in its `__dict__` rather than in slots: a step copies and compares whole
    records several times (the decision, the commit's new version, the kept copy), and a dict
    does either in one C-level call where 33 slots take a Python loop (bench/README.md)."""

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
    # The providers serving this verification's calls, pushes or upstream-checked codes (only
    # their events act on it), and the upstream's id of the current code.
    provider: str | None = None
    upstream_id: str | None = None
    # The catalog row of last_code when its code has several rows (2910/code_mismatch); None: the first.
    last_variant: str | None = None

    @property
    def is_live(self) -> bool:
        return not self.status.is_terminal

    def evolve(self, **changes: Any) -> Verification:
        """`dataclasses.replace` for a record, several times faster."""
        if not changes.keys() <= _FIELDS.keys():
            msg = f"Verification has no fields {sorted(changes.keys() - _FIELDS.keys())}"
            raise TypeError(msg)
        return _made(self.__dict__, changes)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Verification:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:  # equal records share their id and version
        return hash((self.id, self.version))


_FIELDS = {f.name: f for f in dataclasses.fields(Verification)}
_NAMES = tuple(_FIELDS)
_ORDER = {name: index for index, name in enumerate(_NAMES)}
_INT_FIELDS = {
    name for name, f in _FIELDS.items() if "int" in str(f.type)
}


def _made(values: dict[str, Any], changes: dict[str, Any] | None = None) -> Verification:
    """A record of `values` (every field, in field order) with `changes`, without `__init__`: a
    frozen dataclass's goes through `object.__setattr__` for each field."""
    record = object.__new__(Verification)
    fields = record.__dict__
    fields.update(values)
    if changes:
        fields.update(changes)
    return record


# A field at its default is not stored (reading fills the default in): every live
# verification is a hash in Redis, and most channel fields are zero for most of them.
_DEFAULTS = {f.name: f.default for f in _FIELDS.values() if f.default is not dataclasses.MISSING}


def to_fields(record: Verification) -> dict[str, str]:
    """The record as a Redis hash: every value that is not its field's default, as a string."""
    out: dict[str, str] = {}
    for name, value in record.__dict__.items():
        if value is not None and (name not in _DEFAULTS or value != _DEFAULTS[name]):
            out[name] = str(value)
    return out


def changed_fields(before: Verification | None, after: Verification,
                   touched: AbstractSet[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """What a commit must write (`HSET`) and delete (`HDEL`) to turn `before` into `after`;
    `touched` names the only fields that may differ (None: any may)."""
    if before is None:
        return to_fields(after), []
    written: dict[str, str] = {}
    deleted: list[str] = []
    now, was = after.__dict__, before.__dict__
    for name in _NAMES if touched is None else sorted(touched, key=_ORDER.__getitem__):  # in field order
        value = now[name]
        if value == was[name]:
            continue
        if value is None or (name in _DEFAULTS and value == _DEFAULTS[name]):
            deleted.append(name)  # stored before (it differed from this default), not any more
        else:
            written[name] = str(value)
    return written, deleted


def from_fields(raw: dict[Any, Any]) -> Verification:
    """Rebuild a record from a Redis hash (bytes or str keys and values)."""
    values = dict(_ABSENT)
    for key, value in raw.items():
        slot = _SLOTS.get(key)
        if slot is None:
            continue  # the audit trail, the commit token, a field of a newer definition
        name, is_int = slot
        values[name] = int(value) if is_int else (value.decode() if isinstance(value, bytes) else value)
    for name in _REQUIRED:
        if values[name] is _MISSING:
            msg = f"a stored verification lacks {name!r}"
            raise KeyError(msg)
    values["channel"] = Channel(values["channel"])
    values["status"] = Status(values["status"])
    return _made(values)


_MISSING = object()
# Each field's name by its stored name (bytes as redis-py answers, or text), and whether it is
# an integer; what a field that is not stored reads as.
_SLOTS: dict[Any, tuple[str, bool]] = {}
for _name in _NAMES:
    _SLOTS[_name] = _SLOTS[_name.encode()] = (_name, _name in _INT_FIELDS)
_ABSENT = {name: _DEFAULTS.get(name, _MISSING) for name in _NAMES}
_REQUIRED = tuple(name for name in _NAMES if name not in _DEFAULTS)
