"""The simulator as ARS call centre and PASS gateway, over HTTP like a real upstream.

Each request tells the simulator where to report (`webhook`), as callback-style provider APIs
do; the simulator then calls that URL with a signed provider event.
"""

from __future__ import annotations

from service.providers.simulator import SimulatorProvider


class SimulatorUpstreams(SimulatorProvider):
    """Carrier checks, SMS, ARS calls and PASS pushes through the simulator's provider routes."""

    webhook_url: str = ""

    async def place_call(self, reference: str, phone: str, display_code: str) -> None:
        await self._post("/provider/ars/call", {
            "reference": reference, "phone": phone, "display_code": display_code,
            "webhook": self.webhook_url})

    async def send_push(self, reference: str, phone: str, service_name: str | None, timeout_s: int) -> None:
        await self._post("/provider/pass/push", {
            "reference": reference, "phone": phone, "service_name": service_name,
            "timeout_s": timeout_s, "webhook": self.webhook_url})
