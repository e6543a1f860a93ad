"""`X-Veriflow-Signature: t=<unix seconds>,v1=<hex>`, v1 = HMAC-SHA256(secret, "<t>." + body).

Pure functions: the webhook route and the callback sender are thin adapters around them.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Veriflow-Signature"
WINDOW_S = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str | None, now_s: float, window_s: int = WINDOW_S) -> bool:
    """True only for a well-formed signature of this body, made within `window_s` of now."""
    if not header:
        return False
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now_s - timestamp) > window_s:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected.encode(), parts.get("v1", "").encode())
