"""mOTP users in the shell: enrolment, the inputs of an mOTP verification, and the limit reset.

The TOTP secret is sealed at rest (bound to the user and the device generation) and exists in
plain text only in memory and in the enrolment answer (shown once: nothing reads it back for a
client). Name and phone are kept as keyed hashes,
enough to compare a verification's subject with the registration.
"""

from __future__ import annotations

import hmac
import os
import unicodedata
from dataclasses import dataclass

import structlog

from machines import motp_user
from machines.events import MotpConfirm, Redeem, Refusal
from machines.motp_user import MotpUser
from machines.record import Verification
from machines.vocabulary import Channel, Code, Status
from service.clock import Clock
from service.crypto import Secrets, motp_secret_context, token_id
from service.errors import ApiError, BusyError, UnknownVerificationError
from service.motp import totp
from service.settings import MotpSettings
from service.store.keys import Keys, motp_user_ref
from service.store.store import Store
from service.transactor import Transactor

log = structlog.get_logger("veriflow.motp")

MAX_USER_TRIES = 100
UNLOCK_CHANNELS = {Channel.SMS, Channel.ARS, Channel.PASS}


def unknown_user() -> ApiError:
    return ApiError(Code.MOTP_UNKNOWN_USER, http_status=404)


@dataclass(frozen=True, slots=True)
class Enrolment:
    user: MotpUser
    otpauth_uri: str


def normal_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFC", name).split())


def user_view(user_id: str, user: MotpUser) -> dict[str, object]:
    return {"user_id": user_id, "status": "locked" if user.locked else "registered", "failures": user.failures}


class Motp:
    def __init__(self, transactor: Transactor, secrets: Secrets) -> None:
        self.transactor = transactor
        self.store: Store = transactor.store
        self.keys: Keys = transactor.keys
        self.clock: Clock = transactor.clock
        self.secrets = secrets
        self.settings: MotpSettings = transactor.settings.motp

    def identity(self, ref: str, name: str, phone: str) -> tuple[str, str]:
        return (self.secrets.identity_hash(ref + "|name", normal_name(name)),
                self.secrets.identity_hash(ref + "|phone", phone))

    def same_person(self, user: MotpUser, name: str, phone: str) -> bool:
        name_hash, phone_hash = self.identity(user.ref, name, phone)
        # Both compared, in constant time, whatever the first answer.
        same_name = hmac.compare_digest(name_hash, user.name_hash)
        return hmac.compare_digest(phone_hash, user.phone_hash) & same_name

    def _secret(self, user: MotpUser) -> bytes:
        return self.secrets.unseal(user.secret, motp_secret_context(user.ref, user.device))

    async def load(self, client_id: str, user_id: str) -> MotpUser | None:
        return await self.store.load_motp_user(motp_user_ref(client_id, user_id))

    async def enrol(self, client_id: str, user_id: str, name: str, phone: str) -> Enrolment:
        """Register the user's device, replacing any earlier one; refused while locked (AP011)."""
        ref = motp_user_ref(client_id, user_id)
        name_hash, phone_hash = self.identity(ref, name, phone)
        for _ in range(MAX_USER_TRIES):
            before = await self.store.load_motp_user(ref)
            if before is not None and before.locked:
                raise ApiError(Code.MOTP_REGISTRATION_LOCKED)
            key = os.urandom(totp.SECRET_BYTES)
            sealed = self.secrets.seal(key, motp_secret_context(ref, motp_user.next_device(before)))
            after = motp_user.registered(before, ref=ref, client_id=client_id, sealed_secret=sealed,
                                         name_hash=name_hash, phone_hash=phone_hash,
                                         now_ms=self.clock.now_ms())
            if await self.store.save_motp_user(before, after):
                log.info("motp.registered", motp_user=ref, device=after.device)
                uri = totp.otpauth_uri(key, self.settings.issuer, user_id, self.settings.step_s)
                return Enrolment(after, uri)
        raise BusyError(ref)

    def start_refusal(self, user: MotpUser | None, name: str, phone: str) -> Refusal | None:
        if user is None or not self.same_person(user, name, phone):
            return Refusal(Code.MOTP_UNKNOWN_USER)
        return None

    async def confirm_event(self, record: Verification, code: str) -> MotpConfirm:
        """The user as it is now, and the time step the code matches with its current device."""
        now = self.clock.now_ms()
        user = await self.store.load_motp_user(record.motp_user) if record.motp_user else None
        step = None
        if user is not None and record.status is Status.PENDING:
            step = totp.matching_step(self._secret(user), code, now, self.settings.step_s,
                                      self.settings.window_steps)
        return MotpConfirm(now, user=user, step=step)

    async def unlock(self, client_id: str, user_id: str, token: str) -> MotpUser:
        """The limit reset: the key token of a verified SMS/ARS/PASS verification of the same
        person unlocks the user and is spent. The token is checked first (4000), then the
        person (AP005); a refused unlock spends nothing."""
        record = await self._verified_for_unlock(client_id, token)
        ref = motp_user_ref(client_id, user_id)
        user = await self.store.load_motp_user(ref)
        if user is None:
            raise unknown_user()
        person = self.secrets.subject(record)
        if not self.same_person(user, person.name, person.phone):
            raise ApiError(Code.MOTP_UNKNOWN_USER)
        # Spend the token first, through the transactor's own redeem commit, then unlock. The two
        # records live in different slots, so no single step can do both. This order fails safe:
        # a token spent twice or a user unlocked without a spent token cannot happen; a crash in
        # between leaves a spent token and a user still locked, and the user verifies again.
        await self._spend(record.id, client_id, token)
        for _ in range(MAX_USER_TRIES):
            before = await self.store.load_motp_user(ref)
            if before is None or not self.same_person(before, person.name, person.phone):
                # Re-registered under another name or phone since the check above: refuse.
                raise ApiError(Code.MOTP_UNKNOWN_USER)
            after = motp_user.unlocked(before, self.clock.now_ms())
            if await self.store.save_motp_user(before, after):
                log.info("motp.unlocked", motp_user=ref, was_locked=before.locked, by=record.id)
                return after
        raise BusyError(ref)

    async def _verified_for_unlock(self, client_id: str, token: str) -> Verification:
        gone = ApiError(Code.RESULT_GONE)
        verification_id = token_id(token)
        if self.keys.shard_of_id(verification_id) is None:
            raise gone
        record = await self.store.load(verification_id)
        now = self.clock.now_ms()
        if (record is None or record.client_id != client_id or record.channel not in UNLOCK_CHANNELS
                or record.status is not Status.VERIFIED or record.verified_at is None
                or (record.result_expires_at or 0) <= now or record.subject is None
                or not self.secrets.key_token_matches(token, record.id, record.verified_at)):
            raise gone
        return record

    async def _spend(self, verification_id: str, client_id: str, token: str) -> None:
        """Redeem the token as `/v1/results` would (the verification becomes completed)."""

        async def event(record: Verification) -> Redeem:
            ok = record.verified_at is not None and self.secrets.key_token_matches(
                token, record.id, record.verified_at)
            return Redeem(self.clock.now_ms(), token_ok=ok)

        try:
            decision = await self.transactor.apply(verification_id, event, client_id=client_id)
        except UnknownVerificationError:
            raise ApiError(Code.RESULT_GONE) from None
        if not decision.reply.ok:
            raise ApiError(Code.RESULT_GONE)
