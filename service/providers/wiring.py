"""The `Providers` of a running service, built from `settings.providers` (see `config`)."""

from __future__ import annotations

import aiohttp

from service.providers.config import PORTONE, SIMULATOR, TWILIO, ProviderSettings
from service.providers.portone import PortOneProvider
from service.providers.ports import Providers, SmsGateway
from service.providers.sessions import ProviderSessions
from service.providers.simulator import SimulatorClient
from service.providers.twilio import TwilioSmsGateway
from service.settings import ConfigError, Settings


def simulator_client(settings: Settings, http: aiohttp.ClientSession, simulator_url: str | None) -> SimulatorClient:
    base = simulator_url or settings.simulator_url or f"http://127.0.0.1:{settings.port}/sim"
    return SimulatorClient(base, http, settings.provider_timeout_s, settings.provider_secret)


def simulator_webhook(settings: Settings) -> str:
    """Where the simulator reports: the configured webhook URL (VERIFLOW_WEBHOOK_URL,
    providers.webhook_url), else this server's own route."""
    return settings.webhook_url or f"http://127.0.0.1:{settings.port}/v1/providers/{SIMULATOR}/events"


def _credential(value: str | None, variable: str) -> str:
    if not value:
        msg = f"{variable} is not set, and a configured provider needs it"
        raise ConfigError(msg)
    return value


def portone(config: ProviderSettings, http: aiohttp.ClientSession, timeout_s: float) -> PortOneProvider:
    settings = config.portone
    return PortOneProvider(
        imp_key=_credential(settings.imp_key, "VERIFLOW_PORTONE_IMP_KEY"),
        imp_secret=_credential(settings.imp_secret, "VERIFLOW_PORTONE_IMP_SECRET"),
        session=http, timeout_s=timeout_s, pg=settings.pg, base_url=settings.base_url,
        default_company=settings.company,
    )


def twilio(config: ProviderSettings, http: aiohttp.ClientSession, timeout_s: float) -> TwilioSmsGateway:
    settings = config.twilio
    return TwilioSmsGateway(
        account_sid=_credential(settings.account_sid, "VERIFLOW_TWILIO_ACCOUNT_SID"),
        auth_token=_credential(settings.auth_token, "VERIFLOW_TWILIO_AUTH_TOKEN"),
        session=http, timeout_s=timeout_s, from_number=settings.from_number,
        messaging_service_sid=settings.messaging_service_sid, api_key_sid=settings.api_key_sid,
        status_callback=settings.status_callback, base_url=settings.base_url,
    )


def build_providers(settings: Settings, sessions: ProviderSessions, simulator_url: str | None) -> Providers:
    """Each role's provider, on its provider's own session; the simulator's client (and so its
    session) is shared by every role it fills."""
    config = settings.providers
    timeout_s = settings.provider_timeout_s
    simulator = simulator_client(settings, sessions.for_provider(SIMULATOR), simulator_url)
    sms: SmsGateway = simulator
    if config.sms == TWILIO:
        sms = twilio(config, sessions.for_provider(TWILIO), timeout_s)
    upstream = None
    if config.sms_upstream == PORTONE:
        upstream = portone(config, sessions.for_provider(PORTONE), timeout_s)
    # Only the simulator fills carriers, calls and pushes today (config.ROLES says so).
    return Providers(carriers=simulator, sms=sms, calls=simulator, pushes=simulator, code_upstream=upstream,
                     calls_id=config.calls, pushes_id=config.pushes, code_upstream_id=config.sms_upstream)


def webhook_secrets(settings: Settings, *, simulator_mounted: bool) -> dict[str, str]:
    """provider id -> the secret its events at /v1/providers/{id}/events are signed with. The
    simulator's counts only while it is in use (mounted, or filling a role)."""
    secrets = dict(settings.providers.webhook_secrets)
    if simulator_mounted or SIMULATOR in settings.providers.in_use():
        secrets[SIMULATOR] = settings.provider_secret
    else:
        secrets.pop(SIMULATOR, None)
    return secrets
