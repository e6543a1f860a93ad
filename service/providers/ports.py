"""What the service needs from its upstreams, as Protocols its adapters implement. Each method raises
`service.errors.ProviderError` when the upstream cannot be reached or answers nonsense; a refusal
is an answer, not an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from machines.events import Refusal

if TYPE_CHECKING:
    from service.providers.code_upstream import CodeUpstream


@dataclass(frozen=True, slots=True)
class Subscriber:
    name: str
    birth: str
    gender_digit: str
    phone: str
    carrier: str
    is_mvno: bool


class CarrierChecks(Protocol):
    async def check_subscriber(self, reference: str, channel: str, subscriber: Subscriber) -> Refusal | None:
        """At start: does this person own this phone line? None when the carrier agrees."""

    async def check_addons(self, reference: str, phone: str) -> Refusal | None:
        """At confirm of a matching code: are the carrier's add-on steps done (4022, 4023)?"""


class SmsGateway(Protocol):
    async def send_sms(self, reference: str, phone: str, text: str) -> None:
        """Deliver `text`; `reference` is an idempotency key (the same one twice sends once)."""


# ---- ARS call centre and PASS gateway: they answer later, by signed webhook ----


class CallCentre(Protocol):
    async def place_call(self, reference: str, phone: str, display_code: str) -> None:
        """Call `phone`; the user keys `display_code` into the call. The outcome arrives later as a
        provider event naming `reference` (idempotency key: the same reference calls once)."""


class PushGateway(Protocol):
    async def send_push(self, reference: str, phone: str, service_name: str | None, timeout_s: int) -> None:
        """Ask the PASS app on `phone` for an approval valid `timeout_s`; the answer arrives later as
        a provider event naming `reference` (idempotency key)."""


@dataclass(frozen=True, slots=True)
class Providers:
    """The upstream serving each need of the service, and the id of each (`ids`: role -> provider
    id, the roles of `service.providers.config.ROLES`)."""

    carriers: CarrierChecks
    sms: SmsGateway
    calls: CallCentre
    pushes: PushGateway
    code_upstream: CodeUpstream | None = None  # set: the upstream draws and checks SMS codes
    calls_id: str = "simulator"
    pushes_id: str = "simulator"
    code_upstream_id: str | None = None
