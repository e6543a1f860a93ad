"""Start-up refuses an unsafe production (contract section 8).

With a real Redis (`VERIFLOW_REDIS_URL`), `serve`, `api` and `worker` refuse to start, with one
line naming the variable, when the service key is missing or short, when the API keys are
missing or short, or when a provider in use has no secret (the simulator is in use whenever it
is mounted or fills a role). The development defaults (the printed API key, the generated
service key, the published simulator secret) exist only on the embedded store. A real provider
lacks its credentials on any store: it cannot work without them.
"""

from __future__ import annotations

from typing import Final

from service.providers.config import SIMULATOR, SIMULATOR_SECRET_VARIABLE
from service.settings import Settings

MIN_SECRET_KEY_BYTES: Final = 32
MIN_API_KEY_CHARS: Final = 16


def refuse_unsafe(settings: Settings, *, simulator_mounted: bool) -> str | None:
    """Why this process must not start (one line naming the variable), or None."""
    in_use = settings.providers.in_use() | ({SIMULATOR} if simulator_mounted else set())
    problem = _credentials(settings, in_use)
    if problem is not None or settings.redis_url is None:
        return problem  # the embedded store: development defaults are allowed, with their warnings
    for check in (_secret_key, _api_keys):
        problem = check(settings)
        if problem is not None:
            return problem
    if SIMULATOR in in_use and not settings.provider_secret_from_env:
        return (f"{SIMULATOR_SECRET_VARIABLE} is not set (or is the development secret): the simulator is "
                "in use (mounted, or serving a provider role) with VERIFLOW_REDIS_URL")
    return None


def _credentials(settings: Settings, in_use: set[str]) -> str | None:
    for provider in sorted(in_use - {SIMULATOR}):
        missing = settings.providers.missing_credential(provider)
        if missing is not None:
            return f"{missing} is not set: the configured provider {provider!r} needs it"
    return None


def _secret_key(settings: Settings) -> str | None:
    key = (settings.secret_key or "").encode()
    if len(key) >= MIN_SECRET_KEY_BYTES:
        return None
    state = f"is {len(key)} bytes" if key else "is not set"
    return (f"VERIFLOW_SECRET_KEY {state}: with VERIFLOW_REDIS_URL it must be at least "
            f"{MIN_SECRET_KEY_BYTES} bytes (it keys code hashes and seals data at rest)")


def _api_keys(settings: Settings) -> str | None:
    if not settings.api_keys_from_env:
        return ("VERIFLOW_API_KEYS is not set (or holds the development key): with VERIFLOW_REDIS_URL "
                "give client_id:api_key pairs")
    short = sorted(client for client, key in settings.api_keys.items() if len(key) < MIN_API_KEY_CHARS)
    if short:
        return f"VERIFLOW_API_KEYS holds a key shorter than {MIN_API_KEY_CHARS} characters (client {short[0]!r})"
    return None
