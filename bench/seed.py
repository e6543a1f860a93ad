"""Creating verifications fast, through veriflow's own engine (decide + the COMMIT script), for
the steps that need live ones ready: confirm calls and timers at scale.

A seeded verification is what `POST /v1/verifications` commits, minus the carrier's subscriber
check (an HTTP call that changes nothing stored): same record, same timer, same outbox entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from machines import motp_user as motp_user_module
from machines.core import NEW
from machines.events import Event, IssuedCode, MotpStart, NewCall, Start, StartCall
from machines.motp_user import MotpUser
from machines.record import Verification
from machines.vocabulary import Channel, Status
from service import settings as settings_module
from service.catalog import Catalog
from service.crypto import call_context, code_context, motp_secret_context
from service.motp.enrolment import Motp
from service.providers.ports import Subscriber
from service.runtime import Runtime, build_runtime
from service.simulator.magic import magic_outcome
from service.store.keys import motp_user_ref, motp_user_shard

CHUNK = 64


CATALOG = Catalog.load()
EVERY_CODE = {entry.code for entry in CATALOG.entries}


def is_magic(phone: str) -> bool:
    """Whether the simulator would answer this number with a refusal (contract section 5)."""
    return magic_outcome(phone, EVERY_CODE, CATALOG) is not None


def plain_phone(index: int) -> str:
    """The `index`-th phone number that no simulator rule refuses (010 + 8 digits)."""
    phone = f"010{index:08d}"
    while is_magic(phone):
        index += 100_000_000 // 7  # another number, still 8 digits after 010 for small indexes
        phone = f"010{index % 100_000_000:08d}"
    return phone


def subject(index: int) -> Subscriber:
    return Subscriber(name="홍길동", birth="19900101", gender_digit="1", phone=plain_phone(index),
                      carrier="SKT", is_mvno=False)


async def runtime(env: Mapping[str, str]) -> Runtime:
    return await build_runtime(settings_module.load(env))


async def create_one(rt: Runtime, index: int, now_ms: int, *, tx_id: bool,
                     channel: Channel = Channel.SMS) -> tuple[str, str]:
    """One live verification of `channel` started at `now_ms`, as its start route would commit
    it; returns its id and its code (an SMS code, the ARS display code, "" for PASS and mOTP)."""
    keys, client = rt.store.keys, next(iter(rt.settings.api_keys))
    tx = f"tx-{index:010d}-{secrets.token_hex(4)}" if tx_id else None
    person = subject(index)
    user = await motp_user(rt, client, index, now_ms) if channel is Channel.MOTP else None
    if user is not None:
        shard = motp_user_shard(keys, user.ref)
    else:
        shard = keys.tx_shard(client, tx) if tx else keys.shard_of(person.phone)
    vid = keys.new_id(shard)
    code = f"{secrets.randbelow(10**6):06d}"
    record = Verification(
        id=vid, client_id=client, channel=channel, state=NEW, status=Status.PENDING, version=0,
        definition="", created_at=now_ms, tx_id=tx, motp_user=user.ref if user else None,
        subject=rt.secrets.seal_subject(person, vid),
    )
    event: Event
    if channel is Channel.ARS:
        code = code[:2]
        event = StartCall(now_ms, call=NewCall(code, rt.secrets.seal(code.encode(), call_context(vid, 1))))
    elif channel is Channel.PASS:
        event, code = Start(now_ms), ""
    elif user is not None:
        event, code = MotpStart(now_ms, user=user), ""
    else:
        issued = IssuedCode(code_hash=rt.secrets.code_hash(vid, 1, code),
                            sealed_code=rt.secrets.seal(code.encode(), code_context(vid, 1)))
        event = Start(now_ms, issued_code=issued, refusal=None)
    await rt.transactor.create(record, event)  # claims the tx_id
    return vid, code


async def motp_user(rt: Runtime, client: str, index: int, now_ms: int) -> MotpUser:
    """An enrolled mOTP user for the `index`-th person (its own hash, which lives on)."""
    ref = motp_user_ref(client, f"user-{index}")
    person = subject(index)
    enrolment = Motp(rt.transactor, rt.secrets)
    name_hash, phone_hash = enrolment.identity(ref, person.name, person.phone)
    user = motp_user_module.registered(
        None, ref=ref, client_id=client, name_hash=name_hash, phone_hash=phone_hash, now_ms=now_ms,
        sealed_secret=rt.secrets.seal(secrets.token_bytes(20), motp_secret_context(ref, 1)))
    await rt.store.save_motp_user(None, user)
    return dataclasses.replace(user, version=1)


async def create_many(rt: Runtime, starts_ms: Iterable[int], *, tx_id: bool = False,
                      first_index: int = 0, channel: Channel = Channel.SMS) -> list[tuple[str, str]]:
    """Verifications started at each of `starts_ms`, `CHUNK` commits in flight at a time."""
    created: list[tuple[str, str]] = []
    batch: list[Any] = []
    for offset, start in enumerate(starts_ms):
        batch.append(create_one(rt, first_index + offset, start, tx_id=tx_id, channel=channel))
        if len(batch) == CHUNK:
            created += await asyncio.gather(*batch)
            batch = []
    created += await asyncio.gather(*batch)
    return created


async def drop_outboxes(rt: Runtime, *, delete: bool = False) -> None:
    """Forget the seeded SMS deliveries: the benchmark measures steps, not the gateway. Trimmed,
    so that a running dispatcher keeps its consumer group, or deleted when none runs."""
    pipe = rt.store.redis.pipeline(transaction=False)
    for stream in rt.store.keys.all_outboxes():
        if delete:
            pipe.delete(stream)
        else:
            pipe.xtrim(stream, maxlen=0)
    await pipe.execute()
