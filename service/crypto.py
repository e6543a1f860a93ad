"""The service's own secrets: keyed code hashes, sealed values, derived key tokens.

One secret key (VERIFLOW_SECRET_KEY) is stretched into a sub-key per purpose, so a leak of
one kind of value does not expose another. Codes are never stored: only their keyed hash, and
a sealed (AES-GCM) copy in the outbox entry that delivers them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import asdict

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from machines.record import Verification
from service.providers.ports import Subscriber

NONCE_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SealError(ValueError):
    """A sealed value that was tampered with, or sealed under another key or context."""


class Secrets:
    def __init__(self, secret_key: bytes) -> None:
        self._otp_key = self._derive(secret_key, b"otp-hash")
        # Keyed once: a copy of it hashes each code without setting the key up again (a third of
        # the HMAC's cost, paid on every confirm).
        self._otp_mac = hmac.new(self._otp_key, digestmod=hashlib.sha256)
        self._token_key = self._derive(secret_key, b"key-token")
        self._aead = AESGCM(self._derive(secret_key, b"seal"))
        self._identity_key = self._derive(secret_key, b"identity-hash")
        self._fingerprint_key = self._derive(secret_key, b"idempotency-fingerprint")

    @staticmethod
    def _derive(secret_key: bytes, purpose: bytes) -> bytes:
        return hmac.new(secret_key, b"veriflow/" + purpose, hashlib.sha256).digest()

    def code_hash(self, verification_id: str, generation: int, code: str) -> str:
        """The keyed hash of a one-time code, bound to its verification and generation."""
        mac = self._otp_mac.copy()
        mac.update(f"{verification_id}|{generation}|{code}".encode())
        return mac.hexdigest()[:32]

    def key_token(self, verification_id: str, verified_at_ms: int) -> str:
        """The result token of a verified verification, derived rather than stored."""
        message = f"{verification_id}|{verified_at_ms}".encode()
        mac = hmac.new(self._token_key, message, hashlib.sha256).digest()[:18]
        return f"{verification_id}.{_b64(mac)}"

    def key_token_matches(self, token: str, verification_id: str, verified_at_ms: int) -> bool:
        return hmac.compare_digest(token.encode(), self.key_token(verification_id, verified_at_ms).encode())

    def identity_hash(self, context: str, value: str) -> str:
        """A keyed hash of a personal value kept only to be compared (an mOTP user's name, phone)."""
        message = f"{context}|{value}".encode()
        return hmac.new(self._identity_key, message, hashlib.sha256).hexdigest()[:32]

    def request_fingerprint(self, path: str, body: bytes) -> str:
        """The keyed fingerprint of a request an Idempotency-Key names: a body carries a person's
        name, birth and phone, so without the service key the stored fingerprint confirms nothing."""
        return hmac.new(self._fingerprint_key, path.encode() + b"\0" + body, hashlib.sha256).hexdigest()

    def subject(self, record: Verification) -> Subscriber:
        """The verified person, unsealed from a record that still keeps them."""
        if record.subject is None:
            raise SealError(f"{record.id} keeps no subject")
        return Subscriber(**orjson.loads(self.unseal(record.subject, record.id)))  # the id is its context

    def seal_subject(self, subscriber: Subscriber, verification_id: str) -> str:
        return self.seal(orjson.dumps(asdict(subscriber)), verification_id)

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return _b64(nonce + self._aead.encrypt(nonce, plaintext, context.encode()))

    def unseal(self, sealed: str, context: str) -> bytes:
        try:
            raw = _unb64(sealed)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError(context) from exc


# What a sealed value is bound to: unsealing it under any other context fails.


def code_context(verification_id: str, generation: int) -> str:
    """An SMS code of one generation, sealed in the outbox entry that delivers it."""
    return f"{verification_id}|{generation}"


def call_context(verification_id: str, generation: int) -> str:
    """The digits of one ARS call, sealed in the outbox entry that places it."""
    return f"{verification_id}|call|{generation}"


def motp_secret_context(user_ref: str, device: int) -> str:
    """An mOTP user's TOTP secret, bound to the user and the device generation."""
    return f"motp|{user_ref}|{device}"


def new_code(length: int) -> str:
    return f"{secrets.randbelow(10**length):0{length}d}"


def token_id(token: str) -> str:
    """The verification id a key token names (its part before the dot)."""
    return token.partition(".")[0]
