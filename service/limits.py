"""The abuse limits (contract section 9): their configuration and the decisions that need no store.

Five limits, every one counted per client:

- `per_phone`: sends (each SMS, call or push asked of an upstream) to one phone;
- `resend_cooldown`: the time between two sends of one verification;
- `per_ip`, `per_prefix`, `per_client`: starts per end-user IP, per phone-number prefix, per client.

Each is a sliding window: a request is allowed when fewer than `count` requests were counted in
the last `window` milliseconds. The cooldown is the same rule with a count of one: at most one
send of a verification per `resend_cooldown_s`. `null` turns a limit off.

`service.store.limits` counts them in Redis; this module parses the settings, says which
limits a request is counted by, and turns the waits of exceeded limits into a refusal.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

LimitName = Literal["per_phone", "resend_cooldown", "per_ip", "per_prefix", "per_client"]
Kind = Literal["start", "send"]
# Where a limit's keys live: the limits of one scope share a Redis Cluster slot.
Scope = Literal["phone", "ip", "prefix", "client"]

# The order in which a request's scopes are counted. The broadest scope comes last: its
# reservations are never rolled back, so the most contended count is never held by a request
# that a later scope refuses (see service.store.limits).
SCOPE_ORDER: tuple[Scope, ...] = ("phone", "ip", "prefix", "client")

REFUSAL_CODE = "3006"  # service-defined, retryable
REFUSAL_STATUS = 429
REFUSAL_METRIC = "veriflow_limit_refusals_total"  # labelled {limit}: a refusal's `limit`

MAX_PHONE_DIGITS = 15  # E.164


@dataclass(frozen=True, slots=True)
class Window:
    """At most `count` counted requests in any `window_s` seconds."""

    count: int
    window_s: int

    @property
    def window_ms(self) -> int:
        return self.window_s * 1000


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The `limits:` section; a limit that is None (or a cooldown of 0) is off."""

    per_phone: Window | None = Window(5, 600)
    resend_cooldown_s: int = 0
    per_ip: Window | None = None
    per_prefix: Window | None = None
    prefix_digits: int = 7
    per_client: Window | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> LimitSettings:
        """The settings from the parsed `limits:` mapping; missing keys keep their defaults.

        Raises ValueError naming every bad key (`limits.per_ip.starts: …`)."""
        return _Parser().settings(raw)

    @property
    def resend_cooldown(self) -> Window | None:
        """The cooldown as a window: one send of a verification per `resend_cooldown_s`."""
        return Window(1, self.resend_cooldown_s) if self.resend_cooldown_s > 0 else None


DEFAULTS = LimitSettings()

# The key in the config that holds each window's count, and the window's default length.
_WINDOWS: dict[str, tuple[str, int]] = {
    "per_phone": ("sends", 600),
    "per_ip": ("starts", 600),
    "per_prefix": ("starts", 3600),
    "per_client": ("starts", 60),
}


class _Parser:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def settings(self, raw: Mapping[str, Any] | None) -> LimitSettings:
        if raw is None:
            return DEFAULTS
        if not isinstance(raw, Mapping):
            self.errors.append(f"limits: must be a mapping, not {_shown(raw)}")
            raw = {}
        self.unknown("limits", raw, {*_WINDOWS, "resend_cooldown_s"})
        values: dict[str, Any] = {}
        for name, (count_key, default_window) in _WINDOWS.items():
            if name not in raw:
                continue
            extra = {"digits"} if name == "per_prefix" else set()
            values[name] = self.window(f"limits.{name}", raw[name], count_key, default_window, extra)
            if name == "per_prefix" and isinstance(raw[name], Mapping) and "digits" in raw[name]:
                values["prefix_digits"] = self.number(
                    "limits.per_prefix.digits", raw[name]["digits"], low=1, high=MAX_PHONE_DIGITS,
                    nullable=False,
                )
        if "resend_cooldown_s" in raw:
            cooldown = self.number("limits.resend_cooldown_s", raw["resend_cooldown_s"], low=0)
            values["resend_cooldown_s"] = cooldown or 0
        if self.errors:
            raise ValueError("; ".join(self.errors))
        return replace(DEFAULTS, **values)

    def window(self, path: str, raw: Any, count_key: str, default_window: int,
               extra: set[str]) -> Window | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.errors.append(f"{path}: must be a mapping or null, not {_shown(raw)}")
            return None
        self.unknown(path, raw, {count_key, "window_s", *extra})
        default = getattr(DEFAULTS, path.rpartition(".")[2])
        count = self.number(f"{path}.{count_key}", raw.get(count_key, default.count if default else None), low=1)
        window_s = self.number(f"{path}.window_s", raw.get("window_s", default_window), low=1,
                               nullable=False)
        if count is None or window_s is None:
            return None
        return Window(count, window_s)

    def number(self, path: str, raw: Any, *, low: int, high: int | None = None,
               nullable: bool = True) -> int | None:
        if raw is None and nullable:
            return None
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < low or (high is not None and raw > high):
            either = " or null" if nullable else ""
            self.errors.append(f"{path}: must be a whole number {bounds}{either}, not {_shown(raw)}")
            return None
        return raw

    def unknown(self, path: str, raw: Mapping[str, Any], known: set[str]) -> None:
        for key in sorted(set(map(str, raw)) - known):
            self.errors.append(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")


def _shown(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# ---- which limits count a request ----


@dataclass(frozen=True, slots=True)
class Counted:
    """One limit a request is counted by.

    `scope_value` names the counted thing inside its scope (client id, NUL, phone digits, say):
    the store derives key names from it with a keyed digest and never writes it as it is. `item`
    tells two counts of one scope apart (the cooldown's verification id); "" for none."""

    limit: LimitName
    rule: Window
    scope: Scope
    scope_value: str
    item: str = ""


def counted_by(settings: LimitSettings, *, kind: Kind, client_id: str, phone: str | None,
               ip: str | None, verification_id: str | None, sends: bool = True) -> tuple[Counted, ...]:
    """The limits a request is counted by, in `SCOPE_ORDER`.

    A start counts one start in per_ip (when it has an end-user IP), per_prefix and per_client,
    and, when it sends (`sends`; an mOTP start sends nothing), one send in per_phone and the
    first send of its verification for the cooldown. A send (resend, fallback) counts per_phone
    and the cooldown. Whatever sends needs the phone and the verification id."""
    if kind not in {"start", "send"}:
        raise ValueError(f"kind must be start or send, not {kind!r}")
    if kind == "send" and not sends:
        raise ValueError("a send always sends")
    digits = phone_digits(phone) if phone is not None else None
    if sends and (digits is None or not verification_id):
        raise ValueError("a request that sends needs the phone and the verification id")
    found: list[Counted] = []
    if sends and digits is not None and verification_id:
        found += _send_limits(settings, client_id + "\0" + digits, verification_id)
    if kind == "start":
        found += _start_limits(settings, client_id, digits, ip)
    return tuple(sorted(found, key=lambda c: SCOPE_ORDER.index(c.scope)))


def _send_limits(settings: LimitSettings, phone_value: str, verification_id: str) -> list[Counted]:
    found: list[Counted] = []
    if settings.per_phone is not None:
        found.append(Counted("per_phone", settings.per_phone, "phone", phone_value))
    if (cooldown := settings.resend_cooldown) is not None:
        found.append(Counted("resend_cooldown", cooldown, "phone", phone_value, verification_id))
    return found


def _start_limits(settings: LimitSettings, client_id: str, digits: str | None, ip: str | None) -> list[Counted]:
    found: list[Counted] = []
    if settings.per_ip is not None and ip is not None and ip.strip():
        found.append(Counted("per_ip", settings.per_ip, "ip", client_id + "\0" + normal_ip(ip)))
    if settings.per_prefix is not None and digits is not None:
        prefix = digits[: settings.prefix_digits]
        found.append(Counted("per_prefix", settings.per_prefix, "prefix", client_id + "\0" + prefix))
    if settings.per_client is not None:
        found.append(Counted("per_client", settings.per_client, "client", client_id))
    return found


def phone_digits(phone: str) -> str:
    """The digits of a phone number, so that spacing or dashes are no way around a limit."""
    digits = "".join(ch for ch in phone if ch.isascii() and ch.isdigit())
    if not digits:
        raise ValueError("the phone number has no digits")
    return digits


def normal_ip(ip: str) -> str:
    """One spelling per address (`::1`, `0:0::1`), so that spelling is no way around per_ip."""
    text = ip.strip()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


# ---- refusals ----


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request over one or more limits: answered 429 with code 3006 and `Retry-After`.

    `limit` is the exceeded limit with the longest wait (the one that decides `retry_after_s`,
    and the label a refusal is counted under); `exceeded` names all the exceeded limits found."""

    limit: LimitName
    retry_after_s: int
    exceeded: tuple[LimitName, ...]

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def retry_after_s(wait_ms: int) -> int:
    """Whole seconds until a request waiting `wait_ms` would be allowed (at least 1)."""
    return max(1, math.ceil(wait_ms / 1000))


def wait_ms(entry_ms: int, rule: Window, now_ms: int) -> int:
    """How long until the window entry counted at `entry_ms` stops counting."""
    return entry_ms + rule.window_ms - now_ms


def refusal_of(waits: Iterable[tuple[LimitName, int]]) -> Refusal | None:
    """The refusal for the exceeded limits and their waits in ms (None when none is exceeded):
    Retry-After is the longest of the waits."""
    found = list(waits)
    if not found:
        return None
    longest, wait = found[0]
    for name, candidate in found[1:]:
        if candidate > wait:
            longest, wait = name, candidate
    names = tuple(dict.fromkeys(name for name, _ in found))
    return Refusal(longest, retry_after_s(wait), names)
