"""The client side of the provider simulator: carrier checks, SMS, ARS calls and PASS pushes over
HTTP, exactly as the service would speak to a real upstream (it implements every port).

Every request is signed with the simulator's provider secret (`X-Veriflow-Signature`, as the
webhooks are): the simulator acts only on requests the service sent it, and reports their
outcomes only to the webhook URL it was configured with at its start.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import aiohttp
import orjson

from machines.events import Refusal
from service import signing
from service.errors import ProviderError
from service.providers.ports import Subscriber


class SimulatorClient:
    """Every upstream of the service, played by the simulator's provider-side routes."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float, secret: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._secret = secret

    def __repr__(self) -> str:
        return f"SimulatorClient(base_url={self.base_url!r})"

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = orjson.dumps(body)
        headers = {"Content-Type": "application/json",
                   signing.HEADER: signing.sign(self._secret, raw, int(time.time()))}
        try:
            async with self.session.post(self.base_url + path, data=raw, headers=headers,
                                         timeout=self.timeout) as resp:
                if resp.status != 200:  # noqa: PLR2004
                    msg = f"simulator {path} answered {resp.status}"
                    raise ProviderError(msg)
                answer: dict[str, Any] = await resp.json()
                return answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            msg = f"simulator {path} unreachable: {exc.__class__.__name__}"
            raise ProviderError(msg) from exc

    @staticmethod
    def _refusal(answer: dict[str, Any]) -> Refusal | None:
        code = answer.get("code")
        return Refusal(str(code), answer.get("detail_code")) if code else None

    async def check_subscriber(self, reference: str, channel: str, subscriber: Subscriber) -> Refusal | None:
        answer = await self._post("/provider/subscriber", {
            "reference": reference, "channel": channel, **asdict(subscriber)})
        return self._refusal(answer)

    async def check_addons(self, reference: str, phone: str) -> Refusal | None:
        return self._refusal(await self._post("/provider/addons", {"reference": reference, "phone": phone}))

    async def send_sms(self, reference: str, phone: str, text: str) -> None:
        await self._post("/provider/sms", {"reference": reference, "phone": phone, "text": text})

    async def place_call(self, reference: str, phone: str, display_code: str) -> None:
        await self._post("/provider/ars/call", {
            "reference": reference, "phone": phone, "display_code": display_code})

    async def send_push(self, reference: str, phone: str, service_name: str | None, timeout_s: int) -> None:
        await self._post("/provider/pass/push", {
            "reference": reference, "phone": phone, "service_name": service_name,
            "timeout_s": timeout_s})
