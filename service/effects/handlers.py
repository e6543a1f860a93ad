"""Outbox handlers for SMS codes, ARS calls and PASS pushes, performed through the provider ports.

An entry whose code, call or push was superseded (a newer generation, or the verification
ended) is dropped unperformed. Each request names its reference (`providers.references`): its
report names the call or push it is about, and the upstream de-duplicates on it.
"""

from __future__ import annotations

from typing import Any

import structlog

from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.crypto import Secrets, call_context, code_context
from service.providers.ports import CallCentre, PushGateway, SmsGateway
from service.providers.references import reference
from service.settings import Settings
from service.store.store import Store

log = structlog.get_logger("veriflow.outbox")


def sms_text(service_name: str | None, code: str) -> str:
    return f"[{service_name or 'veriflow'}] 본인확인 인증번호 [{code}]를 입력해주세요."


class ProviderEffects:
    """SMS, calls and pushes: each loads its verification and acts only on the current generation."""

    def __init__(self, store: Store, settings: Settings, secrets: Secrets, sms: SmsGateway,
                 calls: CallCentre, pushes: PushGateway) -> None:
        self.store = store
        self.settings = settings
        self.secrets = secrets
        self.sms = sms
        self.calls = calls
        self.pushes = pushes

    async def _current(self, payload: dict[str, Any], channel: Channel, field: str) -> Verification | None:
        record = await self.store.load(payload["id"])
        generation = int(payload["gen"])
        if (record is None or record.channel is not channel or record.status is not Status.PENDING
                or getattr(record, field) != generation or record.subject is None):
            log.info("outbox.superseded", kind=channel.value, generation=generation)
            return None
        return record

    async def send_sms(self, payload: dict[str, Any]) -> None:
        record = await self._current(payload, Channel.SMS, "code_generation")
        if record is None:
            return  # the verification ended or a newer code replaced this one: nothing to send
        generation = record.code_generation
        code = self.secrets.unseal(payload["code"], code_context(record.id, generation)).decode()
        await self.sms.send_sms(reference(record.id, generation), self.secrets.subject(record).phone,
                                sms_text(record.service_name, code))

    async def place_call(self, payload: dict[str, Any]) -> None:
        record = await self._current(payload, Channel.ARS, "call_generation")
        if record is None:
            return
        generation = record.call_generation
        digits = self.secrets.unseal(payload["code"], call_context(record.id, generation)).decode()
        await self.calls.place_call(reference(record.id, generation), self.secrets.subject(record).phone,
                                    digits)

    async def send_push(self, payload: dict[str, Any]) -> None:
        record = await self._current(payload, Channel.PASS, "push_generation")
        if record is None:
            return
        await self.pushes.send_push(reference(record.id, record.push_generation),
                                    self.secrets.subject(record).phone, record.service_name,
                                    self.settings.pass_.push_timeout_s)
