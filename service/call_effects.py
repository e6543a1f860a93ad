"""Outbox handlers for ARS calls and PASS pushes, performed through the provider ports.

Like SMS delivery, an entry whose call or push was superseded (a newer generation, or the
verification ended) is dropped unperformed. The reference sent to the provider is
`<verification id>:<generation>`: its report names the call or push it is about, so a late report
of an old one cannot act on a newer one.
"""

from __future__ import annotations

from typing import Any

import structlog

from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.crypto import Secrets
from service.outbox import Dispatcher
from service.providers.ports import CallCentre, PushGateway
from service.settings import Settings
from service.store import Store

log = structlog.get_logger("veriflow.outbox")


def call_seal_context(verification_id: str, generation: int) -> str:
    return f"{verification_id}|call|{generation}"


def reference(verification_id: str, generation: int) -> str:
    return f"{verification_id}:{generation}"


def parse_reference(text: str) -> tuple[str, int] | None:
    verification_id, sep, generation = text.rpartition(":")
    if not sep or not generation.isdigit() or len(generation) > 6:  # noqa: PLR2004
        return None
    return verification_id, int(generation)


class CallAndPushEffects:
    def __init__(self, store: Store, settings: Settings, secrets: Secrets, calls: CallCentre,
                 pushes: PushGateway) -> None:
        self.store = store
        self.settings = settings
        self.secrets = secrets
        self.calls = calls
        self.pushes = pushes

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.handlers.update({"call": self.place_call, "push": self.send_push})

    async def _current(self, payload: dict[str, Any], channel: Channel, field: str) -> Verification | None:
        record = await self.store.load(payload["id"])
        generation = int(payload["gen"])
        if (record is None or record.channel is not channel or record.status is not Status.PENDING
                or getattr(record, field) != generation or record.subject is None):
            log.info("outbox.superseded", kind=channel.value, generation=generation)
            return None
        return record

    def _phone(self, record: Verification) -> str:
        return self.secrets.subject(record).phone

    async def place_call(self, payload: dict[str, Any]) -> None:
        record = await self._current(payload, Channel.ARS, "call_generation")
        if record is None:
            return
        generation = record.call_generation
        digits = self.secrets.unseal(payload["code"], call_seal_context(record.id, generation)).decode()
        await self.calls.place_call(reference(record.id, generation), self._phone(record), digits)

    async def send_push(self, payload: dict[str, Any]) -> None:
        record = await self._current(payload, Channel.PASS, "push_generation")
        if record is None:
            return
        await self.pushes.send_push(reference(record.id, record.push_generation), self._phone(record),
                                    record.service_name, self.settings.pass_.push_timeout_s)
