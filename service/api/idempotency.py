"""What an Idempotency-Key holds in the store, compactly, and the lease of a request in progress.

    P <fingerprint> <holder>            a first request is in progress (a short lease, renewed)
    A <status> <fingerprint> <sealed>   its answer: the body zlib-compressed, then sealed

One byte names the form, two the status; the fingerprint is kept as raw bytes when it is hex
(32 bytes for a SHA-256 or an HMAC-SHA-256), with its length in one byte. The sealed body is raw
(nonce, ciphertext, tag), not base64. A record of the former JSON form still reads.

The lease: the first request holds its key `idempotency.lease_s` and renews it every third of
that while it works, so a process that dies mid-request releases the key within the lease.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import zlib
from dataclasses import dataclass

import orjson

from service.crypto import Secrets
from service.store.store import Store

PENDING, ANSWER = b"P", b"A"
HEX_FLAG = 0x80


@dataclass(frozen=True, slots=True)
class Held:
    fingerprint: str
    status: int | None  # None: the first request is still in progress
    body: bytes | None = None  # sealed; see `answer_body`
    legacy: bool = False  # the former JSON form: the body is base64 text, not compressed


def _fingerprint(fingerprint: str) -> bytes:
    try:
        raw = bytes.fromhex(fingerprint)
    except ValueError:
        raw = b""
    if raw and len(raw) < HEX_FLAG and raw.hex() == fingerprint:
        return bytes([HEX_FLAG | len(raw)]) + raw
    text = fingerprint.encode()
    if len(text) >= HEX_FLAG:
        msg = "a fingerprint is at most 127 bytes"
        raise ValueError(msg)
    return bytes([len(text)]) + text


def _read_fingerprint(data: bytes, at: int) -> tuple[str, int]:
    flag = data[at]
    size = flag & ~HEX_FLAG
    raw = data[at + 1: at + 1 + size]
    return (raw.hex() if flag & HEX_FLAG else raw.decode()), at + 1 + size


def pending(fingerprint: str) -> bytes:
    """The value holding a key for a first request (unique to this holder)."""
    return PENDING + _fingerprint(fingerprint) + os.urandom(8)


def answer(fingerprint: str, status: int, body: bytes, secrets: Secrets, context: str) -> bytes:
    sealed = secrets.seal(zlib.compress(body, 6), context)
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    return ANSWER + status.to_bytes(2, "big") + _fingerprint(fingerprint) + raw


def decode(value: bytes) -> Held:
    if value[:1] == PENDING:
        return Held(_read_fingerprint(value, 1)[0], None)
    if value[:1] == ANSWER:
        fingerprint, at = _read_fingerprint(value, 3)
        return Held(fingerprint, int.from_bytes(value[1:3], "big"), value[at:])
    legacy = orjson.loads(value)  # {"fingerprint", "status"?, "sealed"?}
    status = legacy.get("status")
    sealed = legacy.get("sealed")
    return Held(str(legacy["fingerprint"]), None if status is None else int(status),
                None if sealed is None else sealed.encode(), legacy=True)


def answer_body(held: Held, secrets: Secrets, context: str) -> bytes:
    """The body of a kept answer, unsealed."""
    body = held.body or b""
    if held.legacy:  # the former form (a raw sealed body may begin with any byte, "{" included)
        return secrets.unseal(body.decode(), context)
    sealed = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return zlib.decompress(secrets.unseal(sealed, context))


class Lease:
    """Renews a held key while the request works; `release` before writing its answer."""

    def __init__(self, store: Store, key: str, value: bytes, lease_s: int) -> None:
        self.store = store
        self.key = key
        self.value = value
        self.lease_s = lease_s
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(Exception):  # a store fault: the request fails on its own
                if not await self.store.renew_idempotency_key(self.key, self.value, self.lease_s * 1000):
                    return  # no longer ours (answered, or the lease ran out)

    async def release(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
