"""Inputs to the machines: API calls, provider reports and timers, as plain values.

The shell does the I/O and the cryptography before it builds an event (it draws a new code and
seals it, hashes a submitted code, asks the carrier); the machine only compares and decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from machines.motp_user import MotpUser


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A freshly drawn one-time code: its keyed hash to keep, and its sealed form to send."""

    code_hash: str
    sealed_code: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upstream's refusal (a carrier check, an add-on check): a catalog code and detail."""

    code: str
    detail_code: str | None = None
    variant: str | None = None  # which catalog row of a code listed twice: 2910 "code_mismatch"


@dataclass(frozen=True, slots=True)
class Start:
    """Open a verification the shell has prepared (ids, sealed subject) with the upstream's answer."""

    now_ms: int
    issued_code: IssuedCode | None = None
    refusal: Refusal | None = None
    upstream_id: str | None = None  # SMS, the upstream checks the code: its id of the code it sent


@dataclass(frozen=True, slots=True)
class Confirm:
    now_ms: int
    code_hash: str | None = None  # keyed hash of the submitted code (SMS, mOTP)
    # The carrier's add-on check, asked only for a matching code; or, when `checked_upstream_id`
    # is set, the upstream's verdict on the code it sent under that id (None: it matches).
    refusal: Refusal | None = None
    checked_upstream_id: str | None = None


@dataclass(frozen=True, slots=True)
class Resend:
    now_ms: int
    issued_code: IssuedCode | None = None
    upstream_id: str | None = None  # the upstream sent a new code under this id
    refusal: Refusal | None = None  # the upstream refused to send a new code


@dataclass(frozen=True, slots=True)
class Cancel:
    now_ms: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer came due. Which one does not matter: the machine compares the clock with every
    deadline the record keeps (so a stale timer changes nothing)."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Redeem:
    """The client presents a key token; the shell has checked it against the record."""

    now_ms: int
    token_ok: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """A read: nothing happens but the deadlines the clock has passed."""

    now_ms: int


# ---- mOTP: the user travels with the event; the shell matched the code to a time step ----


@dataclass(frozen=True, slots=True)
class MotpStart:
    now_ms: int
    user: MotpUser | None
    refusal: Refusal | None = None  # AP005: an unknown user, or a name or phone that differs


@dataclass(frozen=True, slots=True)
class MotpConfirm:
    now_ms: int
    user: MotpUser | None
    step: int | None  # the TOTP time step within the window that the code matches; None: none


# ---- ARS calls, PASS pushes, provider reports and channel fallback ----


@dataclass(frozen=True, slots=True)
class NewCall:
    """A new ARS call: the digits shown on the client's screen, and the sealed copy the call centre
    receives (the user keys them into the call; the call centre compares)."""

    display_code: str
    sealed_code: str


@dataclass(frozen=True, slots=True)
class StartCall:
    """Open an ARS verification: place the first call, or end it with the carrier's refusal."""

    now_ms: int
    call: NewCall | None = None
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class CallAgain:
    """The user asks for a new ARS call (the `resend` route of an ARS verification)."""

    now_ms: int
    call: NewCall


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """A provider's signed report about the call or push of `generation` (from its reference)."""

    now_ms: int
    event_type: str
    code: str
    detail_code: str | None
    generation: int


@dataclass(frozen=True, slots=True)
class SwitchChannel:
    """Turn a failed verification that offers `channel` as a fallback into a flow of that channel.

    `start` is the new channel's own start event (an SMS code drawn, the carrier's answer), which
    the shell prepares exactly as for a fresh start; None when the switch is not offered."""

    now_ms: int
    channel: str
    start: Start | StartCall | None = None


ChannelEvent = StartCall | CallAgain | ProviderReport | SwitchChannel

Event = Start | Confirm | Resend | Cancel | TimerFired | Redeem | Tick | MotpStart | MotpConfirm | ChannelEvent

# Tick has no trigger of its own: every input first lets the clock catch up (see decide).
TRIGGERS: dict[type[Event], str] = {
    Start: "start",
    Confirm: "confirm",
    Resend: "resend",
    Cancel: "cancel",
    TimerFired: "expire",
    Redeem: "redeem",
    MotpStart: "start",
    MotpConfirm: "confirm",
    StartCall: "start",
    CallAgain: "resend",
    ProviderReport: "report",
    SwitchChannel: "fallback",
}
