"""What the service needs from its upstreams. Each method raises ProviderError when the
upstream cannot be reached or answers nonsense; a refusal is an answer, not an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from machines.events import Refusal


class ProviderError(RuntimeError):
    """The upstream did not answer usefully; the request can be retried later."""


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
