"""Which provider serves which need, read from `providers:` in the configuration; their secrets
come from the environment only.

    providers:
      carriers: simulator        # subscriber and add-on checks (veriflow-issued SMS codes, ARS, PASS)
      sms: simulator             # delivers the SMS codes veriflow draws: simulator | twilio
      sms_upstream: null         # null: veriflow draws and checks SMS codes; portone: the upstream does
      calls: simulator           # the ARS call centre
      pushes: simulator          # the PASS gateway
      portone: {base_url, pg, company}
      twilio: {base_url, from_number, messaging_service_sid, status_callback}

Every provider has an id (`simulator`, `portone`, `twilio`). A provider's webhook secret (the one
that signs its events at `POST /v1/providers/{id}/events`) is `VERIFLOW_PROVIDER_SECRET_<ID>`;
the simulator's is `VERIFLOW_PROVIDER_SECRET`. API credentials: `VERIFLOW_PORTONE_IMP_KEY`,
`VERIFLOW_PORTONE_IMP_SECRET`, `VERIFLOW_TWILIO_ACCOUNT_SID`, `VERIFLOW_TWILIO_AUTH_TOKEN` (and
`VERIFLOW_TWILIO_API_KEY_SID` when the token is an API key's secret). A secret-looking key in a
YAML file is refused at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

SIMULATOR: Final = "simulator"
PORTONE: Final = "portone"
TWILIO: Final = "twilio"

# The providers that can fill each role (None: no provider, for the optional roles).
ROLES: Final[dict[str, frozenset[str | None]]] = {
    "carriers": frozenset({SIMULATOR}),
    "sms": frozenset({SIMULATOR, TWILIO}),
    "sms_upstream": frozenset({None, PORTONE}),
    "calls": frozenset({SIMULATOR}),
    "pushes": frozenset({SIMULATOR}),
}
# The environment variables each real provider cannot work without.
CREDENTIALS: Final[dict[str, tuple[str, ...]]] = {
    PORTONE: ("VERIFLOW_PORTONE_IMP_KEY", "VERIFLOW_PORTONE_IMP_SECRET"),
    TWILIO: ("VERIFLOW_TWILIO_ACCOUNT_SID", "VERIFLOW_TWILIO_AUTH_TOKEN"),
}
SECRET_WORDS: Final = ("secret", "token", "password", "imp_key", "account_sid", "api_key")
SIMULATOR_SECRET_VARIABLE: Final = "VERIFLOW_PROVIDER_SECRET"  # noqa: S105 - a variable's name


def webhook_secret_variable(provider: str) -> str:
    return SIMULATOR_SECRET_VARIABLE if provider == SIMULATOR else f"VERIFLOW_PROVIDER_SECRET_{provider.upper()}"


class ProviderConfigError(ValueError):
    """A `providers:` value that cannot be used; the message names the key or variable."""


@dataclass(frozen=True, slots=True)
class PortOneSettings:
    base_url: str
    pg: str | None
    company: str | None
    imp_key: str | None = field(default=None, repr=False)
    imp_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    base_url: str
    from_number: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    account_sid: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    api_key_sid: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    carriers: str
    sms: str
    sms_upstream: str | None
    calls: str
    pushes: str
    portone: PortOneSettings
    twilio: TwilioSettings
    # provider id -> its webhook secret from VERIFLOW_PROVIDER_SECRET_<ID> (not the simulator's)
    webhook_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)  # the CREDENTIALS present

    def in_use(self) -> set[str]:
        """The providers some role names (the simulator also counts when it is mounted)."""
        used = {self.carriers, self.sms, self.calls, self.pushes}
        if self.sms_upstream is not None:
            used.add(self.sms_upstream)
        return used

    def missing_credential(self, provider: str) -> str | None:
        """The first credential variable `provider` needs and the environment lacks."""
        return next((name for name in CREDENTIALS.get(provider, ()) if not self.credentials.get(name)), None)


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        msg = f"configuration key providers.{name} must be a mapping"
        raise ProviderConfigError(msg)
    for key in value:
        if any(word in str(key).lower() for word in SECRET_WORDS):
            msg = (f"configuration key providers.{name}.{key} looks like a secret: secrets come from "
                   "the environment only (see README, Running it for real)")
            raise ProviderConfigError(msg)
    return value


def _text(section: Mapping[str, Any], dotted: str, key: str, default: str | None = None) -> str | None:
    value = section.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        msg = f"configuration key {dotted}.{key} must be text, got {value!r}"
        raise ProviderConfigError(msg)
    return value


def _role(raw: Mapping[str, Any], role: str) -> str | None:
    allowed = ROLES[role]
    value = raw.get(role, SIMULATOR if SIMULATOR in allowed else None)
    if value not in allowed:
        names = ", ".join(sorted("null" if v is None else v for v in allowed))
        msg = f"configuration key providers.{role} must be one of {names}, got {value!r}"
        raise ProviderConfigError(msg)
    return value if value is None else str(value)


def load_provider_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> ProviderSettings:
    """`providers:` of the merged configuration, with the secrets of `env`."""
    roles = {role: _role(raw, role) for role in ROLES}
    portone = _section(raw, PORTONE)
    twilio = _section(raw, TWILIO)
    twilio_settings = TwilioSettings(
        base_url=str(_text(twilio, "providers.twilio", "base_url", "https://api.twilio.com")),
        from_number=_text(twilio, "providers.twilio", "from_number"),
        messaging_service_sid=_text(twilio, "providers.twilio", "messaging_service_sid"),
        status_callback=_text(twilio, "providers.twilio", "status_callback"),
        account_sid=env.get("VERIFLOW_TWILIO_ACCOUNT_SID") or None,
        auth_token=env.get("VERIFLOW_TWILIO_AUTH_TOKEN") or None,
        api_key_sid=env.get("VERIFLOW_TWILIO_API_KEY_SID") or None,
    )
    if roles["sms"] == TWILIO and (twilio_settings.from_number is None) == (
            twilio_settings.messaging_service_sid is None):
        msg = "configuration key providers.twilio needs exactly one of from_number and messaging_service_sid"
        raise ProviderConfigError(msg)
    secrets: dict[str, str] = {}
    prefix = SIMULATOR_SECRET_VARIABLE + "_"
    for name, value in env.items():
        if name.startswith(prefix) and value:
            secrets[name.removeprefix(prefix).lower()] = value
    secrets.pop(SIMULATOR, None)  # the simulator's secret is VERIFLOW_PROVIDER_SECRET
    credentials = {name: env[name] for names in CREDENTIALS.values() for name in names if env.get(name)}
    return ProviderSettings(
        carriers=str(roles["carriers"]),
        sms=str(roles["sms"]),
        sms_upstream=roles["sms_upstream"],
        calls=str(roles["calls"]),
        pushes=str(roles["pushes"]),
        portone=PortOneSettings(
            base_url=str(_text(portone, "providers.portone", "base_url", "https://api.iamport.kr")),
            pg=_text(portone, "providers.portone", "pg"),
            company=_text(portone, "providers.portone", "company"),
            imp_key=env.get("VERIFLOW_PORTONE_IMP_KEY") or None,
            imp_secret=env.get("VERIFLOW_PORTONE_IMP_SECRET") or None,
        ),
        twilio=twilio_settings,
        webhook_secrets=secrets,
        credentials=credentials,
    )
