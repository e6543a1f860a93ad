"""TOTP (RFC 6238) over HOTP (RFC 4226), HMAC-SHA1, and the `otpauth://` URI apps scan.

A dozen lines of hmac rather than a library: the service needs the time step a code matches
(to refuse it ever after), which the common libraries do not return.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote, urlencode

SECRET_BYTES = 20  # 160 bits, the length RFC 4226 recommends for HMAC-SHA1
DIGITS = 6


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    mac = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def time_step(now_ms: int, step_s: int) -> int:
    return now_ms // (step_s * 1000)


def matching_step(key: bytes, code: str, now_ms: int, step_s: int, window: int) -> int | None:
    """The newest time step within `window` steps of now whose code is `code`, or None.
    Every step in the window is computed, so the time taken does not depend on which matched."""
    if len(code) != DIGITS:
        return None
    current = time_step(now_ms, step_s)
    found = None
    for step in range(current - window, current + window + 1):
        if hmac.compare_digest(hotp(key, step), code):
            found = step
    return found


def otpauth_uri(key: bytes, issuer: str, account: str, step_s: int) -> str:
    """The provisioning URI of Google Authenticator's Key URI format: TOTP, SHA1, 6 digits."""
    secret = base64.b32encode(key).decode().rstrip("=")
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS,
                       "period": step_s}, quote_via=quote)
    return f"otpauth://totp/{label}?{query}"
