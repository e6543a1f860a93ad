"""What every channel's shell offers the routes, and the start shared by the subscriber channels.

The builders returned by `confirm` and `resend` run inside the transactor's compare-and-set loop,
once per try: anything slow they need (a provider call) is asked once per request and reused on
a retry after a lost race.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from machines.core import NEW
from machines.events import Event
from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.api import validation
from service.providers.ports import Subscriber
from service.runtime import Runtime

EventBuilder = Callable[[Verification], Awaitable[Event]]


class ChannelShell(Protocol):
    channel: Channel
    takes_over: bool  # whether a failed verification of another channel may fall back to this one

    async def prepare_start(self, rt: Runtime, client_id: str, body: dict[str, Any]) -> tuple[Verification, Event]:
        """A new verification's record and its start event, from a validated start request."""

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        """The start event of this channel for `record` (new, or handed over by a fallback)."""

    def confirm(self, rt: Runtime, body: dict[str, Any]) -> EventBuilder:
        """The event of a confirm request with `body`, for the record as it is read."""

    def resend(self, rt: Runtime) -> EventBuilder:
        """The event of a resend request."""


class SubscriberChannel:
    """SMS, ARS and PASS: a subject the carrier knows, a verification in the tx_id's or phone's shard."""

    channel: Channel
    takes_over = True

    async def prepare_start(self, rt: Runtime, client_id: str, body: dict[str, Any]) -> tuple[Verification, Event]:
        start = validation.start_request(body, allow_private=rt.settings.allow_private_callbacks)
        keys = rt.store.keys
        # A tx_id's claim must share its verification's slot, so the tx_id picks the shard.
        shard = keys.tx_shard(client_id, start.tx_id) if start.tx_id else keys.shard_of(start.subject.phone)
        verification_id = keys.new_id(shard)
        structlog.contextvars.bind_contextvars(verification_id=verification_id)
        now = rt.clock.now_ms()
        record = Verification(
            id=verification_id, client_id=client_id, channel=self.channel, state=NEW,
            status=Status.PENDING, version=0, definition="", created_at=now, tx_id=start.tx_id,
            callback_url=start.callback_url, service_name=start.service_name,
            subject=rt.secrets.seal_subject(start.subject, verification_id),
            provider=self.provider_id(rt),
        )
        return record, await self.start_event(rt, record, start.subject, now)

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        raise NotImplementedError

    def provider_id(self, rt: Runtime) -> str | None:
        """The provider whose events may act on this channel's new verifications (None: none)."""
        return {Channel.ARS: rt.providers.calls_id, Channel.PASS: rt.providers.pushes_id,
                Channel.SMS: rt.providers.code_upstream_id}.get(self.channel)
