"""The adapter that speaks to the provider simulator over HTTP, as to a real upstream."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import aiohttp

from machines.events import Refusal
from service.providers.ports import ProviderError, Subscriber


class SimulatorProvider:
    """Carrier checks and SMS delivery through the simulator's provider-side routes."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.session.post(self.base_url + path, json=body, timeout=self.timeout) as resp:
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
