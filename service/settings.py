"""Configuration: `config/defaults.yaml`, merged with the YAML file named by VERIFLOW_CONFIG,
then the VERIFLOW_* variables. Validated once at start-up; a bad value stops the service
with a message naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from machines.record import Policy
from machines.vocabulary import Channel
from service.limits import LimitSettings
from service.providers.config import ProviderConfigError, ProviderSettings, load_provider_settings


def config_dir() -> Path:
    """The checkout's top-level `config/` when the package runs from one (editable install,
    `python -m service`), else the copy a wheel installs as the package data `service/_config`."""
    checkout = Path(__file__).resolve().parents[__name__.count(".")]  # the directory holding the package
    if (checkout / "pyproject.toml").is_file() and (checkout / "config" / "defaults.yaml").is_file():
        return checkout / "config"
    return Path(str(resources.files(__name__.partition(".")[0]) / "_config"))


CONFIG_DIR = config_dir()
DEV_CLIENT = ("dev", "dev-key-change-me")
DEV_PROVIDER_SECRET = "dev-provider-secret-change-me"  # noqa: S105 - announced with a warning


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class SmsSettings:
    session_ttl_s: int
    max_verify_attempts: int
    max_resends: int
    code_length: int


@dataclass(frozen=True, slots=True)
class MotpSettings:
    session_ttl_s: int
    max_failures: int  # consecutive wrong codes that lock the user
    step_s: int  # the TOTP period
    window_steps: int  # steps accepted on each side of now, for phone clock drift
    issuer: str  # shown by the authenticator app


@dataclass(frozen=True, slots=True)
class ArsSettings:
    session_ttl_s: int
    max_calls: int
    display_code_length: int


@dataclass(frozen=True, slots=True)
class PassSettings:
    session_ttl_s: int
    push_timeout_s: int
    min_age_years: int


@dataclass(frozen=True, slots=True)
class StoreSettings:
    connect_timeout_s: float  # how long start-up waits for the store
    socket_timeout_s: float  # how long one command waits for an answer
    record_cache: int = 0  # live records a process keeps from its own commits (service.record_cache)


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    ttl_s: int  # how long an answer is replayed for its Idempotency-Key
    lease_s: int  # how long a request in progress holds its key unless it renews it


@dataclass(frozen=True, slots=True)
class Settings:
    raw: Mapping[str, Any]
    redis_url: str | None
    api_keys: Mapping[str, str]  # client id -> api key
    api_keys_from_env: bool
    provider_secret: str
    provider_secret_from_env: bool
    secret_key: str | None
    result_ttl_s: int
    record_ttl_s: int
    allow_private_callbacks: bool
    callback_timeout_s: float
    callback_give_up_after_s: int
    outbox_max_attempts: int
    sms: SmsSettings
    shards: int
    timer_poll_ms: int
    timer_lease_ms: int
    timer_batch: int
    outbox_block_ms: int
    outbox_batch: int
    outbox_concurrency: int
    outbox_retry_idle_ms: int
    simulator_url: str | None
    provider_timeout_s: float
    host: str
    port: int
    motp: MotpSettings
    ars: ArsSettings
    pass_: PassSettings
    fallback: Mapping[str, Mapping[str, frozenset[str]]]  # channel -> offered channel -> codes
    webhook_url: str | None
    event_dedup_ttl_s: int
    providers: ProviderSettings  # which provider serves which need, and their secrets
    limits: LimitSettings  # the abuse limits of contract section 9
    store: StoreSettings  # how long to wait for the store, at start-up and on each call
    idempotency: IdempotencySettings
    outbox_consumer_idle_s: int
    # client id -> the second error dialect its envelopes speak (`clients: {id: {error_dialect}}`)
    error_dialects: Mapping[str, str] = field(default_factory=dict)

    def policy(self, channel: Channel) -> Policy:
        if channel is Channel.SMS:
            return Policy(
                session_ttl_s=self.sms.session_ttl_s,
                result_ttl_s=self.result_ttl_s,
                max_verify_attempts=self.sms.max_verify_attempts,
                max_resends=self.sms.max_resends,
            )
        if channel is Channel.MOTP:
            return Policy(
                session_ttl_s=self.motp.session_ttl_s,
                result_ttl_s=self.result_ttl_s,
                max_verify_attempts=self.motp.max_failures,
                max_resends=0,
            )
        return self.call_or_push_policy(channel)

    def call_or_push_policy(self, channel: Channel) -> Policy:
        offered = tuple((target, codes) for target, codes in self.fallback.get(channel.value, {}).items())
        if channel is Channel.ARS:
            return Policy(session_ttl_s=self.ars.session_ttl_s, result_ttl_s=self.result_ttl_s,
                          max_resends=self.ars.max_calls - 1, fallback=offered)
        if channel is Channel.PASS:
            return Policy(session_ttl_s=self.pass_.session_ttl_s, result_ttl_s=self.result_ttl_s,
                          push_timeout_s=self.pass_.push_timeout_s, fallback=offered)
        msg = f"channel {channel} is not available"
        raise ConfigError(msg)

    def session_ttl_s(self, channel: Channel) -> int:
        return self.policy(channel).session_ttl_s


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read configuration file {path}: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(data, dict):
        msg = f"configuration file {path} must hold a mapping at the top level"
        raise ConfigError(msg)
    return data


def _get(raw: Mapping[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            msg = f"configuration key {dotted} is missing"
            raise ConfigError(msg)
        node = node[part]
    return node


def _int(raw: Mapping[str, Any], dotted: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    value = _get(raw, dotted)
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"configuration key {dotted} must be a whole number, got {value!r}"
        raise ConfigError(msg)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        msg = f"configuration key {dotted} must be {bound}, got {value}"
        raise ConfigError(msg)
    return value


def _number(raw: Mapping[str, Any], dotted: str) -> float:
    value = _get(raw, dotted)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        msg = f"configuration key {dotted} must be a positive number, got {value!r}"
        raise ConfigError(msg)
    return float(value)


def _bool(raw: Mapping[str, Any], dotted: str) -> bool:
    value = _get(raw, dotted)
    if not isinstance(value, bool):
        msg = f"configuration key {dotted} must be true or false, got {value!r}"
        raise ConfigError(msg)
    return value


def _optional_str(raw: Mapping[str, Any], dotted: str) -> str | None:
    value = _get(raw, dotted)
    if value is not None and not isinstance(value, str):
        msg = f"configuration key {dotted} must be text, got {value!r}"
        raise ConfigError(msg)
    return value


def parse_api_keys(text: str) -> dict[str, str]:
    """`client_id:api_key[,client_id:api_key…]`, as VERIFLOW_API_KEYS carries it."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        client_id, sep, key = item.partition(":")
        if not sep or not client_id or len(key) < 8:  # noqa: PLR2004 - short keys are guessable
            msg = ("VERIFLOW_API_KEYS must be client_id:api_key pairs with keys of 8+ characters "
                   "(16+ with VERIFLOW_REDIS_URL)")
            raise ConfigError(msg)
        if client_id in keys or key in keys.values():
            msg = f"VERIFLOW_API_KEYS names client {client_id!r} or its key twice"
            raise ConfigError(msg)
        keys[client_id] = key
    if not keys:
        msg = "VERIFLOW_API_KEYS is set but names no client"
        raise ConfigError(msg)
    return keys


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the files and the environment (injectable for tests)."""
    env = os.environ if env is None else env
    raw = _read_yaml(CONFIG_DIR / "defaults.yaml")
    if env.get("VERIFLOW_CONFIG"):
        raw = deep_merge(raw, _read_yaml(Path(env["VERIFLOW_CONFIG"])))

    redis_url = env.get("VERIFLOW_REDIS_URL") or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        msg = "VERIFLOW_REDIS_URL must start with redis://, rediss://, unix:// or redis+cluster://"
        raise ConfigError(msg)
    keys_text = env.get("VERIFLOW_API_KEYS")
    provider_secret = env.get("VERIFLOW_PROVIDER_SECRET")
    return Settings(
        raw=raw,
        redis_url=redis_url,
        api_keys=parse_api_keys(keys_text) if keys_text else dict([DEV_CLIENT]),
        # A published development value counts as unset, so its warning still shows.
        api_keys_from_env=bool(keys_text) and DEV_CLIENT[1] not in (keys_text or ""),
        provider_secret=provider_secret or DEV_PROVIDER_SECRET,
        provider_secret_from_env=bool(provider_secret) and provider_secret != DEV_PROVIDER_SECRET,
        secret_key=env.get("VERIFLOW_SECRET_KEY") or None,
        result_ttl_s=_int(raw, "result_ttl_s"),
        record_ttl_s=_int(raw, "record_ttl_s"),
        allow_private_callbacks=_bool(raw, "callbacks.allow_private_networks"),
        callback_timeout_s=_number(raw, "callbacks.timeout_s"),
        callback_give_up_after_s=_int(raw, "callbacks.give_up_after_s"),
        outbox_max_attempts=_int(raw, "outbox.max_attempts"),
        sms=SmsSettings(
            session_ttl_s=_int(raw, "channels.sms.session_ttl_s"),
            max_verify_attempts=_int(raw, "channels.sms.max_verify_attempts"),
            max_resends=_int(raw, "channels.sms.max_resends", minimum=0),
            code_length=_int(raw, "channels.sms.code_length", minimum=4, maximum=10),
        ),
        shards=_int(raw, "shards", maximum=16384),
        timer_poll_ms=_int(raw, "timers.poll_interval_ms"),
        timer_lease_ms=_int(raw, "timers.lease_ms", minimum=100),
        timer_batch=_int(raw, "timers.batch"),
        outbox_block_ms=_int(raw, "outbox.block_ms"),
        outbox_batch=_int(raw, "outbox.batch"),
        outbox_concurrency=_int(raw, "outbox.concurrency"),
        outbox_retry_idle_ms=_int(raw, "outbox.retry_idle_ms", minimum=10),
        simulator_url=env.get("VERIFLOW_SIMULATOR_URL") or _optional_str(raw, "providers.simulator_url"),
        provider_timeout_s=_number(raw, "providers.timeout_s"),
        host=str(_get(raw, "server.host")),
        port=_int(raw, "server.port", maximum=65535),
        motp=MotpSettings(
            session_ttl_s=_int(raw, "channels.motp.session_ttl_s"),
            max_failures=_int(raw, "channels.motp.max_failures"),
            step_s=_int(raw, "channels.motp.step_s", maximum=3600),
            window_steps=_int(raw, "channels.motp.window_steps", minimum=0, maximum=10),
            issuer=_issuer(raw),
        ),
        ars=ArsSettings(
            session_ttl_s=_int(raw, "channels.ars.session_ttl_s"),
            max_calls=_int(raw, "channels.ars.max_calls"),
            display_code_length=_int(raw, "channels.ars.display_code_length", maximum=10),
        ),
        pass_=PassSettings(
            session_ttl_s=_int(raw, "channels.pass.session_ttl_s"),
            push_timeout_s=_int(raw, "channels.pass.push_timeout_s"),
            min_age_years=_int(raw, "channels.pass.min_age_years", minimum=0),
        ),
        fallback=_fallback(raw),
        webhook_url=env.get("VERIFLOW_WEBHOOK_URL") or _optional_str(raw, "providers.webhook_url"),
        event_dedup_ttl_s=_int(raw, "providers.event_dedup_ttl_s"),
        providers=_providers(raw, env),
        error_dialects=_error_dialects(raw),
        limits=_limits(raw),
        store=StoreSettings(
            connect_timeout_s=_number(raw, "store.connect_timeout_s"),
            socket_timeout_s=_number(raw, "store.socket_timeout_s"),
            record_cache=_int(raw, "store.record_cache", minimum=0),
        ),
        idempotency=IdempotencySettings(
            ttl_s=_int(raw, "idempotency.ttl_s"),
            lease_s=_int(raw, "idempotency.lease_s"),
        ),
        outbox_consumer_idle_s=_int(raw, "outbox.consumer_idle_s"),
    )


def _error_dialects(raw: Mapping[str, Any]) -> dict[str, str]:
    """`clients: {<client id>: {error_dialect: <a dialect of config/error_dialects.yaml>}}`."""
    table = raw.get("clients") or {}
    if not isinstance(table, Mapping):
        msg = "configuration key clients must map client ids to {error_dialect: name}"
        raise ConfigError(msg)
    known = sorted(_read_yaml(CONFIG_DIR / "error_dialects.yaml"))
    out: dict[str, str] = {}
    for client_id, options in table.items():
        if options is None:
            continue
        if not isinstance(options, Mapping):
            msg = f"configuration key clients.{client_id} must be a mapping such as {{error_dialect: xsolla}}"
            raise ConfigError(msg)
        dialect = options.get("error_dialect")
        if dialect is None:
            continue
        if dialect not in known:
            msg = (f"configuration key clients.{client_id}.error_dialect must be one of "
                   f"{', '.join(known)}, got {dialect!r}")
            raise ConfigError(msg)
        out[str(client_id)] = str(dialect)
    return out


def _providers(raw: Mapping[str, Any], env: Mapping[str, str]) -> ProviderSettings:
    try:
        return load_provider_settings(_get(raw, "providers"), env)
    except ProviderConfigError as exc:
        raise ConfigError(str(exc)) from None


def _limits(raw: Mapping[str, Any]) -> LimitSettings:
    section = raw.get("limits")
    try:
        return LimitSettings.from_config(section)
    except ValueError as exc:
        msg = f"configuration key {exc}"
        raise ConfigError(msg) from None


def _issuer(raw: Mapping[str, Any]) -> str:
    value = _get(raw, "channels.motp.issuer")
    if not isinstance(value, str) or not value.strip() or ":" in value or len(value) > 64:  # noqa: PLR2004
        msg = f"configuration key channels.motp.issuer must be a short name without ':', got {value!r}"
        raise ConfigError(msg)
    return value.strip()


def _fallback(raw: Mapping[str, Any]) -> dict[str, dict[str, frozenset[str]]]:
    """`fallback: {failed channel: {channel offered: [codes that offer it]}}`."""
    table = raw.get("fallback") or {}
    channels = {c.value for c in Channel}
    if not isinstance(table, Mapping):
        msg = "configuration key fallback must map a channel to {channel: [codes]}"
        raise ConfigError(msg)
    out: dict[str, dict[str, frozenset[str]]] = {}
    for source, targets in table.items():
        if source not in channels or not isinstance(targets, Mapping):
            msg = f"configuration key fallback.{source} must name a channel and map channels to codes"
            raise ConfigError(msg)
        for target, codes in targets.items():
            if target not in channels or target == source or not isinstance(codes, list):
                msg = f"configuration key fallback.{source}.{target} must name another channel with a list of codes"
                raise ConfigError(msg)
            out.setdefault(source, {})[target] = frozenset(str(code) for code in codes)
    return out


def with_port(settings: Settings, port: int) -> Settings:
    """The settings of a server told its port on the command line (the simulator URL follows)."""
    from dataclasses import replace  # noqa: PLC0415

    return replace(settings, port=port)
