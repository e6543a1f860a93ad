"""The simulator's web application, mounted under `/sim` by `veriflow serve` or served alone by
`veriflow simulator`.

What a person (or a test) uses:
- `GET /sim/sms?phone=…`: the SMS texts delivered to that phone, oldest first;
- `GET /sim/ars/{phone}`, `POST /sim/ars/{phone}/keypad`: the call ringing, and keying digits into it;
- `GET /sim/pass/{phone}`, `POST /sim/pass/{phone}/approve` and `/deny`: the PASS app's pushes.
What the service uses, as it would a real upstream: `POST /sim/provider/{subscriber,addons,sms}`,
`POST /sim/provider/ars/call` and `POST /sim/provider/pass/push`.
"""

from __future__ import annotations

from aiohttp import web

from service.catalog import Catalog
from service.simulator.carriers import Carriers
from service.simulator.phone import PhoneApps


class Simulator:
    """`provider_secret` signs what the service sends it and the events it reports; `webhook`
    is where it reports them (the service's `/v1/providers/simulator/events`)."""

    def __init__(self, catalog: Catalog, provider_secret: str, webhook: str) -> None:
        self.carriers = Carriers(catalog, provider_secret)
        self.phone_apps = PhoneApps(catalog, provider_secret, webhook)

    def app(self) -> web.Application:
        app = web.Application()
        app[SIMULATOR] = self
        self.carriers.add_routes(app)
        self.phone_apps.add_routes(app)
        return app


SIMULATOR = web.AppKey("simulator", Simulator)
